// Package haproxy talks to HAProxy's Runtime API over its admin socket
// (unix or TCP, "stats socket … level admin").
//
// It is hand-written rather than built on haproxytech/client-native because
// every call here takes a context and a deadline, and because it pipelines:
// one connection per call, switched to interactive mode with "prompt", every
// command written at once one per line, and the replies read back in order.
// Draining 50 servers on 3 instances then costs three round trips instead of
// 150 connections (see the benchmark in services/lb).
//
// Replies are framed the way HAProxy frames them on every version since 1.x:
// each reply is its lines followed by one empty line, and in interactive mode
// the prompt "> " precedes the next reply. A change command ("set server",
// "set weight", "set map", …) answers with nothing on success and with a
// sentence on failure, which Apply maps to the sentinel errors below.
//
// Tested against Debian's HAProxy 2.6 (the captured replies in testdata/)
// and written to the documented CLI of newer versions.
//
// The package is a leaf: it imports nothing from switchboard.
package haproxy
