// Package dns is the dns service (in progress).
package dns
