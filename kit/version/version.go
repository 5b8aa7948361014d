// Package version says which build of switchboard is running, in the
// semantic-version form NATS micro requires, so `switchboard doctor` can
// tell when replicas of a service run different builds.
package version

import (
	"regexp"
	"runtime/debug"
	"strings"
)

// semVer is semver.org's expression, which NATS micro checks versions with.
var semVer = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// stamped is set at build time: -ldflags "-X github.com/switchboard-ops/switchboard/kit/version.stamped=1.4.0".
var stamped string

// String is the running build's version without a leading "v": the stamped
// one, else the module version Go records from the VCS (a pseudo-version
// such as 0.0.0-20261206183000-b89b57d0c1ab+dirty), else 0.0.0-dev.
func String() string {
	if v := clean(stamped); v != "" {
		return v
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := clean(bi.Main.Version); v != "" {
			return v
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "0.0.0-dev+" + s.Value[:12]
			}
		}
	}
	return "0.0.0-dev"
}

func clean(v string) string {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if !semVer.MatchString(v) {
		return ""
	}
	return v
}
