package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// State is a server's administrative state, as "set server <b>/<s> state"
// takes it.
type State string

// The administrative states.
const (
	StateReady State = "ready"
	StateDrain State = "drain"
	StateMaint State = "maint"
)

// Valid reports whether s is one of the three states.
func (s State) Valid() bool { return s == StateReady || s == StateDrain || s == StateMaint }

// Server is one server of one backend as an instance sees it.
type Server struct {
	Backend string
	Name    string
	Addr    string
	Port    int
	// State is the administrative state (forced, inherited or from the
	// configuration; maintenance wins over drain).
	State State
	// AdminFlags is srv_admin_state as HAProxy reports it (SRV_ADMF_*).
	AdminFlags int
	// Operational is srv_op_state: 0 stopped, 1 starting, 2 running, 3 stopping.
	Operational int
	// Weight is the user weight (what "set weight" sets), InitialWeight the
	// one from the configuration.
	Weight        int
	InitialWeight int
	// Status is show stat's status column: "UP", "DOWN", "DRAIN", "MAINT",
	// "no check", "UP 1/3" …
	Status string
	// CheckStatus is the last health check's result ("L4OK", "L7OK", "L4CON" …).
	CheckStatus string
	// Sessions is the number of current sessions (scur).
	Sessions int
	// TotalSessions is the cumulated number of sessions (stot).
	TotalSessions int64
}

// Up reports whether the server passes its health checks (or has none).
func (s Server) Up() bool { return s.Operational == 2 }

// Health is a short word for the operational state.
func (s Server) Health() string {
	switch s.Operational {
	case 0:
		return "down"
	case 1:
		return "starting"
	case 2:
		if s.Status == "no check" {
			return "up (no check)"
		}
		return "up"
	case 3:
		return "stopping"
	}
	return "unknown"
}

// Info is the part of "show info" that callers use to tell a restart.
type Info struct {
	Version string
	// Pid of the process answering (the worker in master-worker mode: a
	// reload changes it).
	Pid       int
	UptimeSec int64
}

// Snapshot is an instance's process info and servers, read on one
// connection.
type Snapshot struct {
	Info    Info
	Servers []Server
}

// Server returns the named server of a backend, or false.
func (s *Snapshot) Server(backend, name string) (Server, bool) {
	for _, sv := range s.Servers {
		if sv.Backend == backend && sv.Name == name {
			return sv, true
		}
	}
	return Server{}, false
}

// HasBackend reports whether any server belongs to backend.
func (s *Snapshot) HasBackend(backend string) bool {
	for _, sv := range s.Servers {
		if sv.Backend == backend {
			return true
		}
	}
	return false
}

// MapEntry is one entry of a map.
type MapEntry struct {
	Key, Value string
}

// ChangeKind says what a Change does.
type ChangeKind int

// The kinds of change.
const (
	// SetState is "set server <backend>/<server> state <state>".
	SetState ChangeKind = iota + 1
	// SetWeight is "set weight <backend>/<server> <weight>".
	SetWeight
	// SetMap sets a map entry, adding it when it is missing
	// ("set map", then "add map" on "entry not found").
	SetMap
	// DelMap is "del map <map> <key>"; a missing key is not an error.
	DelMap
)

// Change is one change to an instance.
type Change struct {
	Kind    ChangeKind
	Backend string
	Server  string
	State   State
	Weight  int
	Map     string
	Key     string
	Value   string
}

// String is the change as a person reads it.
func (c Change) String() string {
	switch c.Kind {
	case SetState:
		return fmt.Sprintf("%s/%s → %s", c.Backend, c.Server, c.State)
	case SetWeight:
		return fmt.Sprintf("%s/%s weight %d", c.Backend, c.Server, c.Weight)
	case SetMap:
		return fmt.Sprintf("map %s: %s=%s", c.Map, c.Key, c.Value)
	case DelMap:
		return fmt.Sprintf("map %s: delete %s", c.Map, c.Key)
	}
	return "unknown change"
}

// Command is the Runtime API command for the change.
func (c Change) Command() (string, error) {
	switch c.Kind {
	case SetState:
		if !c.State.Valid() {
			return "", fmt.Errorf("%w: state %q is not ready, drain or maint", ErrBadArgument, c.State)
		}
		if err := checkArgs(c.Backend, c.Server); err != nil {
			return "", err
		}
		return fmt.Sprintf("set server %s/%s state %s", c.Backend, c.Server, c.State), nil
	case SetWeight:
		if c.Weight < 0 || c.Weight > 256 {
			return "", fmt.Errorf("%w: weight %d is not within 0-256", ErrBadArgument, c.Weight)
		}
		if err := checkArgs(c.Backend, c.Server); err != nil {
			return "", err
		}
		return fmt.Sprintf("set weight %s/%s %d", c.Backend, c.Server, c.Weight), nil
	case SetMap:
		if err := checkArgs(c.Map, c.Key, c.Value); err != nil {
			return "", err
		}
		return fmt.Sprintf("set map %s %s %s", c.Map, c.Key, c.Value), nil
	case DelMap:
		if err := checkArgs(c.Map, c.Key); err != nil {
			return "", err
		}
		return fmt.Sprintf("del map %s %s", c.Map, c.Key), nil
	}
	return "", fmt.Errorf("%w: unknown change kind %d", ErrBadArgument, c.Kind)
}

// checkArgs refuses what would change a command's meaning on the CLI:
// HAProxy splits on blanks and ';' and treats '\' as an escape.
func checkArgs(args ...string) error {
	for _, a := range args {
		if a == "" {
			return fmt.Errorf("%w: empty argument", ErrBadArgument)
		}
		if strings.ContainsAny(a, " \t\r\n;\\#") {
			return fmt.Errorf("%w: %q contains a blank, ';', '#' or '\\'", ErrBadArgument, a)
		}
	}
	return nil
}

// Option configures a Client.
type Option func(*Client)

// WithTimeout bounds each call (dial, write and read together) when the
// context has no earlier deadline. The default is 5s.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithDialer replaces the dialer (tests, SSH tunnels).
func WithDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(c *Client) { c.dial = dial }
}

// WithoutPipelining sends every command on its own connection, as most
// scripts do. It exists for the benchmark that shows why Client pipelines.
func WithoutPipelining() Option { return func(c *Client) { c.perCommand = true } }

// Client talks to one HAProxy instance's Runtime API. It holds no
// connection between calls: each call dials, pipelines its commands and
// reads the replies, so a restarted HAProxy needs no reconnect logic.
type Client struct {
	network, addr string
	timeout       time.Duration
	dial          func(ctx context.Context, network, addr string) (net.Conn, error)
	perCommand    bool
}

// NewClient returns a client for the admin socket at addr on network
// ("unix" or "tcp").
func NewClient(network, addr string, opts ...Option) *Client {
	var d net.Dialer
	c := &Client{network: network, addr: addr, timeout: 5 * time.Second, dial: d.DialContext}
	for _, o := range opts {
		o(c)
	}
	return c
}

// ParseAddress splits "unix:/run/haproxy/admin.sock", "tcp:10.0.0.1:9999",
// a bare absolute path or a bare host:port into network and address.
func ParseAddress(s string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(s, "unix:"):
		network, addr = "unix", strings.TrimPrefix(s, "unix:")
	case strings.HasPrefix(s, "tcp:"):
		network, addr = "tcp", strings.TrimPrefix(s, "tcp:")
	case strings.HasPrefix(s, "/"):
		network, addr = "unix", s
	default:
		network, addr = "tcp", s
	}
	if addr == "" {
		return "", "", fmt.Errorf("address %q is empty", s)
	}
	if network == "tcp" {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return "", "", fmt.Errorf("address %q: %w", s, err)
		}
	}
	return network, addr, nil
}

// Addr is the socket address, for messages.
func (c *Client) Addr() string { return c.addr }

// Exec runs commands on one connection and returns one raw reply per
// command, in order. When the connection breaks part way, it returns the
// replies it got and an error wrapping ErrNoReply.
func (c *Client) Exec(ctx context.Context, cmds ...string) ([]string, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	for _, cmd := range cmds {
		if cmd == "" || strings.ContainsAny(cmd, "\r\n;") {
			return nil, fmt.Errorf("haproxy %s: command %q: %w: empty, or holds a newline or ';'", c.addr, cmd, ErrBadArgument)
		}
	}
	if c.perCommand {
		out := make([]string, 0, len(cmds))
		for _, cmd := range cmds {
			r, err := c.roundTrip(ctx, cmd+"\n", false, 1)
			if err != nil {
				return out, err
			}
			out = append(out, r[0])
		}
		return out, nil
	}
	var b strings.Builder
	b.WriteString("prompt\n")
	for _, cmd := range cmds {
		b.WriteString(cmd)
		b.WriteByte('\n')
	}
	b.WriteString("quit\n")
	r, err := c.roundTrip(ctx, b.String(), true, len(cmds)+1)
	if len(r) > 0 {
		r = r[1:] // the reply to "prompt"
	}
	return r, err
}

// roundTrip dials, writes req, reads until HAProxy closes the connection
// and splits the replies; it wants `want` of them.
func (c *Client) roundTrip(ctx context.Context, req string, prompt bool, want int) ([]string, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	conn, err := c.dial(ctx, c.network, c.addr)
	if err != nil {
		return nil, fmt.Errorf("haproxy %s: connect: %w", c.addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// A cancelled context must interrupt a blocked read, not only a deadline.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(conn, req); err != nil {
		return nil, fmt.Errorf("haproxy %s: send: %w", c.addr, ctxErr(ctx, err))
	}
	data, err := io.ReadAll(bufio.NewReader(conn))
	replies := splitReplies(data, prompt)
	if err != nil && len(replies) < want {
		return replies, fmt.Errorf("haproxy %s: read replies: %w (%w)", c.addr, ErrNoReply, ctxErr(ctx, err))
	}
	if len(replies) < want {
		return replies, fmt.Errorf("haproxy %s: %w: got %d of %d replies before the connection closed", c.addr, ErrNoReply, len(replies), want)
	}
	return replies[:want], nil
}

// ctxErr names the context's end as the cause of a failed read or write:
// the connection's deadline is the context's, and may fire first.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

// splitReplies cuts the byte stream into replies: each is a run of lines
// ended by an empty line. In interactive mode the prompt "> " starts every
// reply but the first.
func splitReplies(data []byte, prompt bool) []string {
	var out []string
	var cur []string
	start := true
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break // a trailing prompt, or a reply cut short
		}
		line := string(data[:i])
		data = data[i+1:]
		if start && prompt {
			line = strings.TrimPrefix(line, "> ")
		}
		start = false
		if line == "" {
			out = append(out, strings.Join(cur, "\n"))
			cur = cur[:0]
			start = true
			continue
		}
		cur = append(cur, line)
	}
	return out
}

// Info reads "show info".
func (c *Client) Info(ctx context.Context) (Info, error) {
	r, err := c.Exec(ctx, "show info")
	if err != nil {
		return Info{}, err
	}
	return parseInfo(r[0])
}

// Servers returns every server of every backend with its admin state,
// health, current sessions and weight.
func (c *Client) Servers(ctx context.Context) ([]Server, error) {
	s, err := c.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return s.Servers, nil
}

// Snapshot reads "show info", "show servers state" and "show stat" on one
// connection.
func (c *Client) Snapshot(ctx context.Context) (*Snapshot, error) {
	r, err := c.Exec(ctx, "show info", "show servers state", "show stat")
	if err != nil {
		return nil, err
	}
	for i, cmd := range []string{"show info", "show servers state", "show stat"} {
		if e := replyError(r[i]); e != nil {
			return nil, &ReplyError{Addr: c.addr, Command: cmd, Reply: r[i], Err: e}
		}
	}
	info, err := parseInfo(r[0])
	if err != nil {
		return nil, fmt.Errorf("haproxy %s: %w", c.addr, err)
	}
	servers, err := ParseServersState(r[1])
	if err != nil {
		return nil, fmt.Errorf("haproxy %s: %w", c.addr, err)
	}
	stats, err := ParseStat(r[2])
	if err != nil {
		return nil, fmt.Errorf("haproxy %s: %w", c.addr, err)
	}
	for i := range servers {
		if st, ok := stats[servers[i].Backend+"/"+servers[i].Name]; ok {
			servers[i].Status = st.Status
			servers[i].CheckStatus = st.CheckStatus
			servers[i].Sessions = st.Sessions
			servers[i].TotalSessions = st.TotalSessions
		}
	}
	return &Snapshot{Info: info, Servers: servers}, nil
}

// Map returns the entries of a map, named by its file as in the
// configuration (or "#<id>").
func (c *Client) Map(ctx context.Context, file string) ([]MapEntry, error) {
	if err := checkArgs(file); err != nil {
		return nil, err
	}
	cmd := "show map " + file
	r, err := c.Exec(ctx, cmd)
	if err != nil {
		return nil, err
	}
	if e := replyError(r[0]); e != nil {
		return nil, &ReplyError{Addr: c.addr, Command: cmd, Reply: r[0], Err: e}
	}
	return parseMap(r[0]), nil
}

// Maps lists the maps the instance has loaded (their files or ids).
func (c *Client) Maps(ctx context.Context) ([]string, error) {
	r, err := c.Exec(ctx, "show map")
	if err != nil {
		return nil, err
	}
	if e := replyError(r[0]); e != nil {
		return nil, &ReplyError{Addr: c.addr, Command: "show map", Reply: r[0], Err: e}
	}
	return parseMapList(r[0]), nil
}

// Apply sends every change on one connection, in order, and returns one
// error per change (nil where it succeeded). The second result is an error
// only when nothing could be said about the changes (HAProxy unreachable);
// changes whose reply never came get an error wrapping ErrNoReply.
func (c *Client) Apply(ctx context.Context, changes []Change) ([]error, error) {
	errs := make([]error, len(changes))
	cmds := make([]string, 0, len(changes))
	idx := make([]int, 0, len(changes))
	for i, ch := range changes {
		cmd, err := ch.Command()
		if err != nil {
			errs[i] = err
			continue
		}
		cmds = append(cmds, cmd)
		idx = append(idx, i)
	}
	replies, err := c.Exec(ctx, cmds...)
	if err != nil && len(replies) == 0 {
		return nil, err
	}
	var retry []int // SetMap of a missing key: add it
	for k, i := range idx {
		if k >= len(replies) {
			errs[i] = fmt.Errorf("haproxy %s: %s: %w", c.addr, cmds[k], ErrNoReply)
			continue
		}
		e := replyError(replies[k])
		if e == nil && replies[k] != "" {
			e = ErrUnexpectedReply
		}
		switch {
		case e == nil:
		case changes[i].Kind == SetMap && errors.Is(e, ErrNoSuchKey):
			retry = append(retry, i)
		case changes[i].Kind == DelMap && errors.Is(e, ErrNoSuchKey):
			// Already gone: the change holds.
		default:
			errs[i] = &ReplyError{Addr: c.addr, Command: cmds[k], Reply: replies[k], Err: e}
		}
	}
	if len(retry) > 0 {
		add := make([]string, len(retry))
		for k, i := range retry {
			ch := changes[i]
			add[k] = fmt.Sprintf("add map %s %s %s", ch.Map, ch.Key, ch.Value)
		}
		replies, err := c.Exec(ctx, add...)
		for k, i := range retry {
			switch {
			case k >= len(replies):
				errs[i] = fmt.Errorf("haproxy %s: %s: %w (%v)", c.addr, add[k], ErrNoReply, err)
			case replies[k] != "":
				e := replyError(replies[k])
				if e == nil {
					e = ErrUnexpectedReply
				}
				errs[i] = &ReplyError{Addr: c.addr, Command: add[k], Reply: replies[k], Err: e}
			}
		}
	}
	return errs, nil
}

func parseInfo(s string) (Info, error) {
	var info Info
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch k {
		case "Version":
			info.Version = v
		case "Pid":
			info.Pid, _ = strconv.Atoi(v)
		case "Uptime_sec":
			info.UptimeSec, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if info.Pid == 0 {
		return info, errors.New("show info: no Pid in the reply")
	}
	return info, nil
}
