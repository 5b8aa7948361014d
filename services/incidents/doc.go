// Package incidents is the incidents service (in progress).
package incidents
