// Package watcher is the watcher service (in progress).
package watcher
