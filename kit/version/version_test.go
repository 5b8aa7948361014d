package version

import "testing"

func TestCleanKeepsOnlySemanticVersions(t *testing.T) {
	for in, want := range map[string]string{
		"v1.4.0": "1.4.0",
		"1.4.0":  "1.4.0",
		"v0.0.0-20261206183000-b89b57d0c1ab+dirty": "0.0.0-20261206183000-b89b57d0c1ab+dirty",
		"(devel)": "",
		"dev":     "",
		"":        "",
		"1.4":     "",
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
	if v := String(); !semVer.MatchString(v) {
		t.Errorf("String() = %q, not a semantic version", v)
	}
}
