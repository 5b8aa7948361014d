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
    environment: production
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
	if ch.Environment != "production" || ch.SickAfter != 4 || ch.RecoverAfter != 2 || ch.Window != 5*time.Minute || ch.MinRatio != 0.95 || ch.Mode != ModeAdvisory ||
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

// TestTheConfigExampleInTheREADMELoads keeps the documented example true to
// the code: every key exists, the values validate.
func TestTheConfigExampleInTheREADMELoads(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "```yaml\nwatcher:\n")
	if !ok {
		t.Fatal("README.md has no ```yaml block starting with watcher:")
	}
	block, _, _ := strings.Cut(rest, "```")
	path := filepath.Join(t.TempDir(), "switchboard.yaml")
	if err := os.WriteFile(path, []byte("watcher:\n"+block), 0o600); err != nil {
		t.Fatal(err)
	}
	file := struct {
		Watcher Config `yaml:"watcher"`
	}{Watcher: DefaultConfig()}
	if err := config.Load(path, nil, &file); err != nil {
		t.Fatal(err)
	}
	cfg := file.Watcher
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the README example does not validate: %v", err)
	}
	if len(cfg.Checks) != 2 || cfg.Checks[0].Environment != "production" || cfg.Checks[1].Aggregate != AggSum ||
		cfg.Checks[1].Safety.MinHealthyFraction != 0.75 || cfg.Ops.Adapter != "slack" {
		t.Fatalf("README example loaded as %+v", cfg)
	}
}
