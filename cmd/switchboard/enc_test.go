package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard-ops/switchboard/services/deployer/enc"
)

func TestEncClassifyPrintsWhatPuppetExpects(t *testing.T) {
	dir := t.TempDir()
	for name, b := range enc.Example() {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hosts, err := os.ReadDir(filepath.Join(dir, "hosts"))
	if err != nil || len(hosts) == 0 {
		t.Fatalf("example has no hosts: %v", err)
	}
	host := strings.TrimSuffix(hosts[0].Name(), ".yaml")
	var out, errOut syncBuffer
	if code := run(t.Context(), []string{"switchboard", "enc", "classify", "--repo", dir, host}, func(string) string { return "" }, nil, &out, &errOut); code != exitOK {
		t.Fatalf("classify %s: exit %d: %s", host, code, errOut.String())
	}
	for _, key := range []string{"classes:", "parameters:", "environment:"} {
		if !strings.Contains(out.String(), key) {
			t.Errorf("classify output lacks %s:\n%s", key, out.String())
		}
	}
	out, errOut = syncBuffer{}, syncBuffer{}
	if code := run(t.Context(), []string{"switchboard", "enc", "classify", "--repo", dir, "no-such-host"}, func(string) string { return "" }, nil, &out, &errOut); code != exitFailed || out.String() != "" {
		t.Errorf("classify of an unknown host: exit %d, stdout %q", code, out.String())
	}
	if code := run(t.Context(), []string{"switchboard", "enc", "classify"}, func(string) string { return "" }, nil, &out, &errOut); code != exitUsage {
		t.Errorf("classify without a host: exit %d, want %d", code, exitUsage)
	}
}
