package watcher

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/kit/config"
)

func TestAConfigFileNamesOnlyWhatDiffersFromTheDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watcher.yaml")
	yml := `graphite:
  url: http://graphite:8080
checks:
  - name: superagg-canary
    backend: superagg
    target: canary.{host}.points_received
    sick_after: 4
    safety:
      max_removals_per_hour: 1
      min_healthy_fraction: 0.8
      cooldown: 2h
`
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if err := config.Load(path, nil, &cfg); err != nil {
		t.Fatal(err)
	}
	ch := cfg.Checks[0]
	if ch.SickAfter != 4 || ch.RecoverAfter != 2 || ch.Window != 5*time.Minute || ch.MinRatio != 0.95 || ch.Mode != ModeAdvisory ||
		ch.Safety.MaxRemovalsPerHour != 1 || ch.Safety.Cooldown != 2*time.Hour || ch.Batch != BatchList {
		t.Fatalf("check %+v: want the file's values over the defaults", ch)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(yml, "sick_after: 4", "sick_aftr: 4", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg = DefaultConfig()
	if err := config.Load(path, nil, &cfg); err == nil || !strings.Contains(err.Error(), `unknown key "sick_aftr"`) {
		t.Fatalf("a misspelt key in a check: %v", err)
	}
}
