// Command c2d-demo is `make demo`: see package demo.
package main
