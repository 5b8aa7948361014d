// Package lb is the lb service (in progress).
package lb
