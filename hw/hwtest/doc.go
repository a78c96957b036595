// Package hwtest holds hardware fakes for unit tests, built on periph's gpiotest.Pin.
//
// NewBoard gives agent tests a hw.Board whose outputs run periphhw's real board logic over fake
// lines that record every write with a timestamp; WaitFor and WaitHistory wait on those writes
// without sleeping; FailNext makes writes fail (EBUSY by default, surfacing as
// *hw.TransientError). NewInputs gives a hw.Inputs running periphhw's input logic (pull,
// active-low, edge waits, debounce) over fake lines a test drives with Pin.Drive or Inputs.Set;
// Pin.FailWaits makes waits for edges fail. Chip, Pi5Chip and Pi4Chip are fake GPIO chips named like a Raspberry Pi's,
// for resolution tests of periphhw.System.
//
// Nothing here registers pins in periph's global gpioreg (periphhw resolves over chips, not
// gpioreg), so tests using it can run in parallel and leave no global state behind.
package hwtest
