// Package twin is the device-twin document of c2d-hub, Azure's model: tags (service-only),
// desired properties (the service's wishes) and reported properties (the device's state), each a
// JSON tree with a $version, and $metadata with $lastUpdated for every object and leaf (desired
// also $lastUpdatedVersion).
//
// This package is pure logic — validation against Azure's limits, merge patches in which null
// deletes a key, replacement, versions, etags and rendering — so it can be tested on its own and
// used by whatever stores and serves twins. Limits (azure-methods-twin.md): tags 8 KB, desired and
// reported 32 KB each (as compact JSON without metadata); keys ≤ 1 KB without control characters,
// '.', '$' or space; values bool, number, string or object — no arrays; integers within ±2^52;
// strings ≤ 4 KB; depth ≤ 10. Every violation is a *Error naming the path.
package twin
