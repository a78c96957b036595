// Package golddoc holds the golden-doc test: every command output and error message that
// README.md, docs/cli.md and docs/agent.md quote in a marked block or table is produced by the
// real programs (c2d, c2d-hub, c2d-agent, built and run as processes) and compared with the doc's
// text, so the docs cannot drift from the programs.
//
// Markers (HTML comments, invisible on GitHub):
//
//	<!-- golden: NAME -->        before a fenced block: the block is the output of scenario NAME,
//	                             line for line
//	<!-- golden-table: NAME -->  before a table: every `quoted` text in each row's first column
//	                             (column=N: its Nth) is a message some scenario of table NAME
//	                             prints
//
// In quoted text "..." stands for any run of characters within a line (ids, times, paths);
// everything else must match exactly. A marked quote without a scenario fails the test, as does a
// scenario whose output no longer matches.
package golddoc
