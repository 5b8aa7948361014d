package deployer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"

	"github.com/switchboard-ops/switchboard/kit/command"
	"github.com/switchboard-ops/switchboard/services/deployer/enc"
	"github.com/switchboard-ops/switchboard/services/deployer/executor"
	"github.com/switchboard-ops/switchboard/services/deployer/gitrepo"
)

// deploySpec is deploy's spec with the configured batch size (Config.Batch)
// as --batch's default: it is what a deploy without --batch uses, so help
// shows that number.
func deploySpec(defaultBatch int) *commandv1.CommandSpec {
	return &commandv1.CommandSpec{
		Name:    "deploy",
		Usage:   fmt.Sprintf("deploy <service> <role@env> --version=<v> [--batch=%d] [--max-failures=0] [--tags=a,b] [--dry-run]", defaultBatch),
		Summary: "Pin a service's version for a role in the ENC, then run Puppet on the role's hosts in batches.",
		Help: "Pins <service> → <role> → <version> in environments/<env>.yaml (a no-op when it is pinned already), " +
			"then runs Puppet on every active host of the role in that environment, --batch hosts at a time, reporting each batch. " +
			"It stops when more than --max-failures hosts failed. `cancel <job>` stops it after the running batch. " +
			"If the replica running it dies, another one resumes at the next unfinished batch; finished batches never run twice. " +
			"`deploy status <job>` shows where it is.",
		Example: "deploy carbonpickle api@production --version=0.2.9.12 --batch=5 --max-failures=1",
		Args: []*commandv1.ArgSpec{
			{Name: "service", Type: commandv1.ArgType_ARG_TYPE_STRING, Required: true, Help: "the service, as named in the ENC's pins"},
			{Name: "target", Type: commandv1.ArgType_ARG_TYPE_ROLE_ENV, Required: true, Help: "role@environment"},
		},
		Flags: []*commandv1.FlagSpec{
			{Name: "version", Type: commandv1.ArgType_ARG_TYPE_VERSION, Help: "version to pin and deploy (required)"},
			{Name: "batch", Type: commandv1.ArgType_ARG_TYPE_INT, Help: "hosts per batch; without it, the configured deployer.batch",
				Default: strconv.Itoa(defaultBatch), Min: 1, Max: 500},
			{Name: "max-failures", Type: commandv1.ArgType_ARG_TYPE_INT, Help: "failed hosts tolerated before stopping", Default: "0", Min: 0, Max: 100000},
			{Name: "tags", Type: commandv1.ArgType_ARG_TYPE_STRING, Help: "Puppet tags, comma-separated"},
		},
		SupportsDryRun: true,
		Mutating:       true,
		Resumable:      true,
		Confirm:        commandv1.ConfirmPolicy_CONFIRM_POLICY_NEVER,
	}
}

var deployStatusSpec = &commandv1.CommandSpec{
	Name:    "deploy status",
	Usage:   "deploy status <job>",
	Summary: "Where a deploy is: batches done, failures, state.",
	Example: "deploy status 7bfb4d06dcb7",
	Args:    []*commandv1.ArgSpec{{Name: "job", Type: commandv1.ArgType_ARG_TYPE_JOB_ID, Required: true, Help: "the deploy's job id"}},
}

// rollout is a deploy's progress, saved after every batch in KV
// sb_deployer so that a replica taking the job over continues at the next
// unfinished batch.
type rollout struct {
	Job         string   `json:"job"`
	Service     string   `json:"service"`
	Role        string   `json:"role"`
	Environment string   `json:"environment"`
	Version     string   `json:"version"`
	Tags        []string `json:"tags,omitempty"`
	Batch       int      `json:"batch"`
	MaxFailures int      `json:"max_failures"`
	// Hosts are saved once, under their own key: the progress saved after
	// every batch stays small however many hosts there are.
	Hosts       []rHost   `json:"-"`
	PinCommit   string    `json:"pin_commit,omitempty"`
	BatchesDone int       `json:"batches_done"`
	OK          int       `json:"ok"`
	Failed      []rFail   `json:"failed,omitempty"`
	State       string    `json:"state"` // running | succeeded | failed | cancelled
	Attempt     uint32    `json:"attempt"`
	StartedAt   time.Time `json:"started_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

type rHost struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	FQDN    string `json:"fqdn,omitempty"`
}

type rFail struct {
	Host   string `json:"host"`
	Status string `json:"status"`
	Detail string `json:"detail"`
}

func (r *rollout) batches() int { return (len(r.Hosts) + r.Batch - 1) / r.Batch }

func rolloutKey(job string) string { return "rollout." + job }

func rolloutHostsKey(job string) string { return "rollout-hosts." + job }

func (s *Service) loadRollout(ctx context.Context, job string) (*rollout, error) {
	e, err := s.state.Get(ctx, rolloutKey(job))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rollout %s: %w", job, err)
	}
	var r rollout
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("decode rollout %s: %w", job, err)
	}
	he, err := s.state.Get(ctx, rolloutHostsKey(job))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("read rollout %s hosts: %w", job, err)
	}
	if err == nil {
		if err := json.Unmarshal(he.Value(), &r.Hosts); err != nil {
			return nil, fmt.Errorf("decode rollout %s hosts: %w", job, err)
		}
	}
	return &r, nil
}

// saveRolloutHosts records the hosts of a rollout, once, before its first batch.
func (s *Service) saveRolloutHosts(ctx context.Context, r *rollout) error {
	b, err := json.Marshal(r.Hosts)
	if err != nil {
		return err
	}
	if _, err := s.state.Put(ctx, rolloutHostsKey(r.Job), b); err != nil {
		return fmt.Errorf("save rollout %s hosts: %w", r.Job, err)
	}
	return nil
}

func (s *Service) saveRollout(ctx context.Context, r *rollout) error {
	r.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	// Saved even when the job's context ends: the record is what a
	// take-over resumes from.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := s.state.Put(wctx, rolloutKey(r.Job), b); err != nil {
		return fmt.Errorf("save rollout %s: %w", r.Job, err)
	}
	return nil
}

func intFlag(job *command.Job, name string, def int) int {
	if v := job.Flag(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

func splitTags(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// deploy pins and rolls out; see deploySpec.
func (s *Service) deploy(ctx context.Context, job *command.Job) error {
	r, err := s.loadRollout(ctx, job.ID())
	if err != nil {
		return err
	}
	if r == nil {
		if r, err = s.startRollout(ctx, job); err != nil || r == nil {
			return err
		}
	} else {
		r.Attempt = job.Attempt()
		if r.State != "running" {
			// The replica that ran it recorded how it ended and stopped
			// before answering: give that answer, and run no batch again.
			job.Progressf(ctx, "The rollout had ended (%s, after batch %d of %d) before the replica running it stopped; nothing is run again.",
				r.State, r.BatchesDone, r.batches())
			return s.endedRollout(ctx, job, r)
		}
		job.Progressf(ctx, "Resuming %s %s@%s %s at batch %d of %d (batches 1–%d finished before and are not run again).",
			r.Service, r.Role, r.Environment, r.Version, r.BatchesDone+1, r.batches(), r.BatchesDone)
	}
	return s.runBatches(ctx, job, r)
}

// startRollout checks the request, pins the version and records the
// rollout; nil without error means there is nothing to run (dry run, no hosts).
func (s *Service) startRollout(ctx context.Context, job *command.Job) (*rollout, error) {
	svc := job.Arg("service")
	role, env, _ := strings.Cut(job.Arg("target"), "@")
	version := job.Flag("version")
	if version == "" {
		return nil, command.UserErrorf("--version is required: deploy %s %s --version=<v>", svc, job.Arg("target"))
	}
	if !s.version.MatchString(version) {
		return nil, command.UserErrorf("version %q does not match the configured pattern %s; nothing was changed", version, s.version)
	}
	tags := splitTags(job.Flag("tags"))
	if err := executor.CheckTags(tags); err != nil {
		return nil, command.UserError(err)
	}
	batch := intFlag(job, "batch", s.cfg.Batch)
	maxFail := intFlag(job, "max-failures", 0)
	inv, _, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkTarget(inv, svc, role, env); err != nil {
		return nil, err
	}
	hosts := inv.HostsOf(role, env)
	cur := inv.Envs[env].Pins[svc][role]
	r := &rollout{Job: job.ID(), Service: svc, Role: role, Environment: env, Version: version, Tags: tags, Batch: batch,
		MaxFailures: maxFail, State: "running", Attempt: job.Attempt(), StartedAt: time.Now().UTC()}
	for _, h := range hosts {
		addr := h.IPv4
		if addr == "" {
			addr = nonEmpty(h.FQDN, h.Name)
		}
		r.Hosts = append(r.Hosts, rHost{Name: h.Name, Address: addr, FQDN: h.FQDN})
	}
	if job.DryRun() {
		pin := fmt.Sprintf("would pin %s → %s → %s in %s (now %s)", svc, role, version, enc.EnvPath(env), nonEmpty(cur, "not pinned"))
		if cur == version {
			pin = fmt.Sprintf("%s is pinned to %s for %s@%s already (no commit)", svc, version, role, env)
		}
		return nil, job.Done(ctx, fmt.Sprintf("Dry run: %s, then run Puppet on %d host(s) in %d batch(es) of %d, stopping after %d failure(s):\n%s",
			pin, len(r.Hosts), r.batches(), batch, maxFail+1, planText(r)))
	}
	if cur == version {
		job.Progressf(ctx, "%s is pinned to %s for %s@%s already: no commit; running Puppet anyway.", svc, version, role, env)
	} else {
		res, err := s.commitAndPublish(ctx, job, fmt.Sprintf("deploy %s %s@%s %s", svc, role, env, version), func(inv *enc.Inventory, t *gitrepo.Tree) ([]gitrepo.Change, error) {
			if err := checkTarget(inv, svc, role, env); err != nil {
				return nil, err
			}
			data, err := t.ReadFile(enc.EnvPath(env))
			if err != nil {
				return nil, err
			}
			d, err := enc.ParseDocument(data)
			if err != nil {
				return nil, command.UserErrorf("%s: %v", enc.EnvPath(env), err)
			}
			d.SetPin(svc, role, version)
			return []gitrepo.Change{{Path: enc.EnvPath(env), Data: d.Bytes()}}, nil
		}, true)
		if err != nil {
			return nil, err
		}
		r.PinCommit = res.Commit.String()
		job.Progressf(ctx, "Pinned %s → %s → %s (was %s) in commit %s.", svc, role, version, nonEmpty(cur, "not pinned"), res.Commit.String()[:12])
	}
	if len(r.Hosts) == 0 {
		r.State = "succeeded"
		s.saveRollout(ctx, r)
		return nil, job.Done(ctx, r.succeededText())
	}
	if err := s.saveRolloutHosts(ctx, r); err != nil {
		return nil, err
	}
	if err := s.saveRollout(ctx, r); err != nil {
		return nil, err
	}
	job.Progressf(ctx, "Running Puppet on %d host(s) of %s@%s in %d batch(es) of %d.", len(r.Hosts), role, env, r.batches(), batch)
	return r, nil
}

// checkTarget: the environment exists, the service is declared in its
// pins, and it runs on the role.
func checkTarget(inv *enc.Inventory, svc, role, env string) error {
	e := inv.Envs[env]
	if e == nil {
		return command.UserErrorf("unknown environment %q (environments: %s); nothing was changed", env, strings.Join(inv.EnvNames(), ", "))
	}
	pins, ok := e.Pins[svc]
	if !ok {
		var known []string
		for k := range e.Pins {
			known = append(known, k)
		}
		slices.Sort(known)
		return command.UserErrorf("unknown service %q in %s (services pinned there: %s); nothing was changed", svc, env, strings.Join(known, ", "))
	}
	if _, ok := pins[role]; !ok {
		var known []string
		for k := range pins {
			known = append(known, k)
		}
		slices.Sort(known)
		if e.Roles[role] == nil {
			return command.UserErrorf("unknown role %q in %s; nothing was changed", role, env)
		}
		return command.UserErrorf("%s does not run on role %s in %s (it runs on: %s); nothing was changed", svc, role, env, strings.Join(known, ", "))
	}
	return nil
}

func planText(r *rollout) string {
	var b strings.Builder
	for i := 0; i < r.batches(); i++ {
		if i == 20 {
			fmt.Fprintf(&b, "… and %d more batch(es)\n", r.batches()-20)
			break
		}
		fmt.Fprintf(&b, "  batch %d: %s\n", i+1, strings.Join(hostNames(r.batchHosts(i)), ", "))
	}
	return b.String()
}

func (r *rollout) batchHosts(i int) []rHost {
	return r.Hosts[i*r.Batch : min((i+1)*r.Batch, len(r.Hosts))]
}

func hostNames(hs []rHost) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Name
	}
	return out
}

// runBatches runs the batches from the first unfinished one. A cancel lets
// the running batch finish; a shutdown interrupts it, and the take-over
// runs it again (Puppet runs are idempotent; finished batches are not).
func (s *Service) runBatches(ctx context.Context, job *command.Job, r *rollout) error {
	n := r.batches()
	// Posts and saves go out even after a cancel request ended ctx.
	pctx := context.WithoutCancel(ctx)
	action := executor.Action{Tags: r.Tags, Service: r.Service, Version: r.Version, Environment: r.Environment, Role: r.Role}
	for b := r.BatchesDone; b < n; b++ {
		if ctx.Err() != nil {
			if errors.Is(context.Cause(ctx), command.ErrCancelled) {
				r.State = "cancelled"
				s.saveRollout(pctx, r)
				job.Progress(pctx, r.cancelledText())
			}
			return context.Cause(ctx)
		}
		hosts := r.batchHosts(b)
		results := s.runBatch(ctx, hosts, action)
		var fails []string
		ok := 0
		for _, res := range results {
			if res.Status == executor.OK {
				ok++
				continue
			}
			r.Failed = append(r.Failed, rFail{Host: res.Host, Status: res.Status.String(), Detail: res.Detail})
			fails = append(fails, fmt.Sprintf("%s: %s (%s)", res.Host, res.Status, res.Detail))
		}
		if ctx.Err() != nil && !errors.Is(context.Cause(ctx), command.ErrCancelled) {
			// Shutting down mid-batch: this batch does not count as done.
			return context.Cause(ctx)
		}
		r.OK += ok
		r.BatchesDone = b + 1
		stop := len(r.Failed) > r.MaxFailures
		if stop {
			r.State = "failed"
		} else if r.BatchesDone == n {
			r.State = "succeeded"
		}
		if err := s.saveRollout(pctx, r); err != nil {
			return err
		}
		msg := fmt.Sprintf("Batch %d of %d: %d ok", b+1, n, ok)
		if len(fails) > 0 {
			msg += fmt.Sprintf(", %d failed — %s", len(fails), strings.Join(fails, "; "))
		}
		job.Progress(pctx, msg)
		if stop {
			return command.UserError(errors.New(r.failedText()))
		}
	}
	return job.Done(pctx, r.succeededText())
}

// endedRollout answers for a rollout whose end was recorded by a replica
// that stopped before it could answer.
func (s *Service) endedRollout(ctx context.Context, job *command.Job, r *rollout) error {
	switch r.State {
	case "succeeded":
		return job.Done(ctx, r.succeededText())
	case "failed":
		return command.UserError(errors.New(r.failedText()))
	case "cancelled":
		// A take-over of a job whose cancel was asked ends it as cancelled
		// without running it; a handler cannot end a job as cancelled, so
		// should the record say so anyway, it is answered as a failure.
		return command.UserError(errors.New(r.cancelledText()))
	}
	return fmt.Errorf("rollout %s: unknown state %q", r.Job, r.State)
}

// succeededText is the answer of a rollout that ran every batch.
func (r *rollout) succeededText() string {
	if len(r.Hosts) == 0 {
		return fmt.Sprintf("Pinned; %s@%s has no active hosts, so no Puppet runs.", r.Role, r.Environment)
	}
	text := fmt.Sprintf("Deployed %s %s to %s@%s: %d host(s) ok in %d batch(es)", r.Service, r.Version, r.Role, r.Environment, r.OK, r.batches())
	if len(r.Failed) > 0 {
		text += fmt.Sprintf(", %d failed within --max-failures=%d (%s)", len(r.Failed), r.MaxFailures, failList(r.Failed))
	}
	return text + "."
}

// failedText is the answer of a rollout stopped by the failure limit after
// its last recorded batch.
func (r *rollout) failedText() string {
	return fmt.Sprintf("Stopped after batch %d of %d: %d host(s) failed, more than --max-failures=%d (%s). %d host(s) ok; %d not run. The pin stays at %s; fix the hosts and deploy again.",
		r.BatchesDone, r.batches(), len(r.Failed), r.MaxFailures, failList(r.Failed), r.OK, len(r.Hosts)-r.OK-len(r.Failed), r.Version)
}

// cancelledText says where a rollout stopped on request.
func (r *rollout) cancelledText() string {
	return fmt.Sprintf("Stopped on request after batch %d of %d (%d ok, %d failed); the pin stays at %s.", r.BatchesDone, r.batches(), r.OK, len(r.Failed), r.Version)
}

func failList(fs []rFail) string {
	var out []string
	for i, f := range fs {
		if i == 10 {
			out = append(out, fmt.Sprintf("… %d more", len(fs)-10))
			break
		}
		out = append(out, f.Host+" "+f.Status)
	}
	return strings.Join(out, ", ")
}

// runBatch runs one batch to its end. Its context survives a cancel
// request (the batch finishes, then the rollout stops) but not a shutdown.
func (s *Service) runBatch(ctx context.Context, hosts []rHost, a executor.Action) []executor.Result {
	bctx, bcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer bcancel()
	stop := context.AfterFunc(ctx, func() {
		if !errors.Is(context.Cause(ctx), command.ErrCancelled) {
			bcancel()
		}
	})
	defer stop()
	targets := make([]executor.Host, len(hosts))
	for i, h := range hosts {
		targets[i] = executor.Host{Name: h.Name, Address: h.Address, FQDN: h.FQDN}
	}
	var out []executor.Result
	for res := range s.exec.Run(bctx, targets, a) {
		out = append(out, res)
	}
	return out
}

// deployStatus shows a rollout's progress.
func (s *Service) deployStatus(ctx context.Context, job *command.Job) error {
	id := job.Arg("job")
	r, err := s.loadRollout(ctx, id)
	if err != nil {
		return err
	}
	if r == nil {
		return command.UserErrorf("no deploy with job id %s (deploy status knows deploy jobs of the last 30 days)", id)
	}
	text := fmt.Sprintf("deploy %s %s@%s %s (job %s): %s — batch %d of %d done, %d host(s) ok, %d failed (limit %d), %d to go; attempt %d, updated %s ago.",
		r.Service, r.Role, r.Environment, r.Version, r.Job, r.State, r.BatchesDone, r.batches(), r.OK, len(r.Failed), r.MaxFailures,
		len(r.Hosts)-min(len(r.Hosts), r.BatchesDone*r.Batch), r.Attempt, time.Since(r.UpdatedAt).Round(time.Second))
	if len(r.Failed) > 0 {
		var fs []string
		for _, f := range r.Failed {
			fs = append(fs, fmt.Sprintf("%s: %s (%s)", f.Host, f.Status, f.Detail))
		}
		text += "\nFailed: " + strings.Join(fs, "; ")
	}
	return job.Done(ctx, text)
}
