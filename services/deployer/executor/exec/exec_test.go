package exec_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/deployer/executor"
	"github.com/switchboard-ops/switchboard/services/deployer/executor/exec"
	"github.com/switchboard-ops/switchboard/services/deployer/executor/executortest"
)

func TestMain(m *testing.M) {
	executortest.GateMain()
	os.Exit(m.Run())
}

func TestConformance(t *testing.T) {
	executortest.Run(t, func(t *testing.T) executor.Executor {
		ex, err := exec.New(exec.Config{Command: []string{"sh", "-c", executortest.Script, "sh", "{host}"}, PuppetExitCodes: true})
		if err != nil {
			t.Fatal(err)
		}
		return ex
	})
}

func TestArgvTemplateNeverGoesThroughAShell(t *testing.T) {
	ex, err := exec.New(exec.Config{Command: []string{"printf", "%s|", "{host}", "--tags", "{tags}", "{version}"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []executor.Result
	for r := range ex.Run(context.Background(), []executor.Host{{Name: "web-1"}}, executor.Action{Version: "1.0 $(touch /tmp/pwned)", Timeout: 5 * time.Second}) {
		got = append(got, r)
	}
	if len(got) != 1 || got[0].Output != "web-1|1.0 $(touch /tmp/pwned)|" {
		t.Fatalf("output %q: the version must arrive as one literal argument and --tags be dropped without tags", got[0].Output)
	}
}

func TestAMissingProgramIsUnreachableNotAPanic(t *testing.T) {
	ex, _ := exec.New(exec.Config{Command: []string{"/nonexistent/puppet"}})
	for r := range ex.Run(context.Background(), []executor.Host{{Name: "a"}}, executor.Action{}) {
		if r.Status != executor.Unreachable {
			t.Fatalf("status %s (%s), want unreachable", r.Status, r.Detail)
		}
	}
}

func TestAtMostParallelHostsRunAtOnce(t *testing.T) {
	for _, parallel := range []int{1, 3} {
		executortest.ParallelLimit(t, parallel, func(t *testing.T, command []string, parallel int) executor.Executor {
			ex, err := exec.New(exec.Config{Command: command, Parallel: parallel, Timeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			return ex
		})
	}
}
