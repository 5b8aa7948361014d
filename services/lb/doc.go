// Package lb puts servers into and out of service on a fleet of HAProxy
// load balancers, from chat and from automation, through HAProxy's Runtime
// API (package haproxy).
//
// Commands: lb status, lb add, lb remove, lb drain, lb weight (service
// "lb") and ratelimit set, ratelimit show (service "ratelimit"), served by
// one process. Every change goes to every instance of the host's
// environment, and the answer says per instance what happened. The desired
// state of each server and the rate limits are kept in KV sb_lb_desired; a
// reconcile loop re-applies them after an HAProxy restart or reload, catches
// up instances that missed a change, and reports (or, configured so,
// reverts) changes people made by hand. Safety checks (never the last ready
// server, never more than a fraction of a backend) hold for automation too;
// --force needs a configured role.
package lb
