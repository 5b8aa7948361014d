package haproxy

import (
	"encoding/csv"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors for the replies callers branch on. A ReplyError wraps
// one of them when HAProxy's sentence is recognised.
var (
	ErrNoSuchBackend    = errors.New("no such backend")
	ErrNoSuchServer     = errors.New("no such server")
	ErrNoSuchMap        = errors.New("no such map")
	ErrNoSuchKey        = errors.New("no such map entry")
	ErrPermissionDenied = errors.New("permission denied (the socket needs level admin)")
	ErrUnknownCommand   = errors.New("unknown command")
	ErrBadArgument      = errors.New("bad argument")
	// ErrUnexpectedReply is a reply to a change command that is not empty
	// and not a sentence this package knows: treated as a failure.
	ErrUnexpectedReply = errors.New("unexpected reply")
	// ErrNoReply means the connection closed before the command's reply.
	ErrNoReply = errors.New("no reply")
)

// ReplyError is HAProxy refusing a command.
type ReplyError struct {
	Addr    string
	Command string
	// Reply is HAProxy's text, trimmed to its first line.
	Reply string
	// Err is the recognised sentinel, or ErrUnexpectedReply.
	Err error
}

func (e *ReplyError) Error() string {
	first, _, _ := strings.Cut(e.Reply, "\n")
	msg := fmt.Sprintf("haproxy %s: %s: %s", e.Addr, e.Command, strings.TrimSpace(first))
	if e.Err == ErrPermissionDenied {
		msg += " (the stats socket needs level admin)"
	}
	return msg
}

func (e *ReplyError) Unwrap() error { return e.Err }

// replyPatterns maps the sentences of HAProxy 2.6 and later to sentinels.
var replyPatterns = []struct {
	prefix string
	err    error
}{
	{"No such backend", ErrNoSuchBackend},
	{"Can't find backend", ErrNoSuchBackend},
	{"No such server", ErrNoSuchServer},
	{"Can't find server", ErrNoSuchServer},
	{"Require 'backend/server'", ErrBadArgument},
	{"Unknown map identifier", ErrNoSuchMap},
	{"Unknown ACL identifier", ErrNoSuchMap},
	{"entry not found", ErrNoSuchKey},
	{"Key not found", ErrNoSuchKey},
	{"Permission denied", ErrPermissionDenied},
	{"Unknown command", ErrUnknownCommand},
	{"'set server <srv> state' expects", ErrBadArgument},
	{"Absolute weight can only be", ErrBadArgument},
	{"Relative weight", ErrBadArgument},
	{"Backend is using a static LB algorithm", ErrBadArgument},
	{"Failed to", ErrUnexpectedReply},
}

// replyError recognises an error sentence at the start of a reply; data
// replies (a CSV, a list) and empty replies give nil.
func replyError(reply string) error {
	for _, p := range replyPatterns {
		if strings.HasPrefix(reply, p.prefix) {
			return p.err
		}
	}
	return nil
}

// ParseServersState parses the reply to "show servers state" (format 1,
// the same from 1.6 to 3.x; later versions add columns at the end, which
// are looked up by name).
func ParseServersState(s string) ([]Server, error) {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) == 0 || lines[0] == "" {
		return nil, errors.New("show servers state: empty reply")
	}
	if strings.TrimSpace(lines[0]) != "1" {
		return nil, fmt.Errorf("show servers state: unknown format version %q", lines[0])
	}
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "# ") {
		return nil, errors.New("show servers state: no header line")
	}
	col := map[string]int{}
	for i, name := range strings.Fields(strings.TrimPrefix(lines[1], "# ")) {
		col[name] = i
	}
	for _, need := range []string{"be_name", "srv_name", "srv_addr", "srv_op_state", "srv_admin_state", "srv_uweight", "srv_iweight"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("show servers state: header lacks %s", need)
		}
	}
	var out []Server
	for n, line := range lines[2:] {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(f) {
				return f[i]
			}
			return ""
		}
		atoi := func(name string) (int, error) {
			v, err := strconv.Atoi(get(name))
			if err != nil {
				return 0, fmt.Errorf("show servers state line %d: %s: %w", n+3, name, err)
			}
			return v, nil
		}
		sv := Server{Backend: get("be_name"), Name: get("srv_name"), Addr: get("srv_addr")}
		var err error
		if sv.Operational, err = atoi("srv_op_state"); err != nil {
			return nil, err
		}
		if sv.AdminFlags, err = atoi("srv_admin_state"); err != nil {
			return nil, err
		}
		if sv.Weight, err = atoi("srv_uweight"); err != nil {
			return nil, err
		}
		if sv.InitialWeight, err = atoi("srv_iweight"); err != nil {
			return nil, err
		}
		sv.Port, _ = strconv.Atoi(get("srv_port"))
		sv.State = adminState(sv.AdminFlags)
		out = append(out, sv)
	}
	return out, nil
}

// Admin state flags (include/haproxy/server-t.h, SRV_ADMF_*).
const (
	admForcedMaint    = 0x01
	admInheritedMaint = 0x02
	admConfigMaint    = 0x04
	admForcedDrain    = 0x08
	admInheritedDrain = 0x10
	admResolveMaint   = 0x20
	admHostnameMaint  = 0x40
)

func adminState(flags int) State {
	if flags&(admForcedMaint|admInheritedMaint|admConfigMaint|admResolveMaint|admHostnameMaint) != 0 {
		return StateMaint
	}
	if flags&(admForcedDrain|admInheritedDrain) != 0 {
		return StateDrain
	}
	return StateReady
}

// Stat is the part of one "show stat" row lb uses.
type Stat struct {
	Proxy, Name   string
	Status        string
	CheckStatus   string
	Sessions      int
	TotalSessions int64
	Weight        int
}

// ParseStat parses "show stat" CSV and returns the server rows (not
// FRONTEND or BACKEND) by "<backend>/<server>". Columns are found by name,
// so versions that add columns parse the same.
func ParseStat(s string) (map[string]Stat, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "# ") {
		return nil, errors.New("show stat: reply does not start with the CSV header")
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(s, "# ")))
	r.FieldsPerRecord = -1
	r.LazyQuotes = true
	rows, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("show stat: %w", err)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	for _, need := range []string{"pxname", "svname", "scur", "status"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("show stat: header lacks %s", need)
		}
	}
	out := map[string]Stat{}
	for _, row := range rows[1:] {
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(row) {
				return row[i]
			}
			return ""
		}
		sv := get("svname")
		if sv == "FRONTEND" || sv == "BACKEND" || sv == "" {
			continue
		}
		st := Stat{Proxy: get("pxname"), Name: sv, Status: get("status"), CheckStatus: get("check_status")}
		st.Sessions, _ = strconv.Atoi(get("scur"))
		st.TotalSessions, _ = strconv.ParseInt(get("stot"), 10, 64)
		st.Weight, _ = strconv.Atoi(get("weight"))
		out[st.Proxy+"/"+st.Name] = st
	}
	return out, nil
}

// parseMap parses "show map <map>": "<ref> <key> <value>" per line.
func parseMap(s string) []MapEntry {
	var out []MapEntry
	for _, line := range strings.Split(s, "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) < 2 {
			continue
		}
		e := MapEntry{Key: f[1]}
		if len(f) == 3 {
			e.Value = f[2]
		}
		out = append(out, e)
	}
	return out
}

// parseMapList parses "show map": "<id> (<file>) <description>" per line.
func parseMapList(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		i, j := strings.IndexByte(line, '('), strings.IndexByte(line, ')')
		if i >= 0 && j > i {
			out = append(out, line[i+1:j])
		}
	}
	return out
}
