// Package rfc2136 reads a zone with AXFR and changes it with DNS UPDATE
// (RFC 2136), both signed with TSIG (RFC 8945). It works with any primary
// that allows transfer and update for a key: Knot, BIND, PowerDNS.
//
// Every UPDATE carries prerequisites, so an apply is conditional on the
// state the plan saw: each changed RRset must still be exactly what was read
// ("RRset exists, value dependent", or "RRset does not exist" for an add),
// and the first message also requires the SOA to be the one that was read,
// which refuses the whole apply if anything in the zone changed meanwhile.
// dnscontrol's and octodns's RFC 2136 providers send no prerequisites.
//
// Changes are sent in batches (one message up to about 60 KB over TCP), so
// a thousand changes take a handful of round trips instead of a thousand.
package rfc2136

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

// Client talks to one primary server.
type Client struct {
	server    string
	keyName   string
	algorithm string
	secret    string
	timeout   time.Duration
	batch     int
	maxBytes  int
}

// Option configures a Client.
type Option func(*Client)

// WithTSIG signs every message with the named key. algorithm is a name such
// as "hmac-sha256"; secret is base64 as in a BIND or Knot key file.
func WithTSIG(name, algorithm, secret string) Option {
	return func(c *Client) {
		c.keyName = dns.CanonicalName(name)
		c.algorithm = dns.CanonicalName(algorithm)
		c.secret = secret
	}
}

// WithTimeout bounds each network exchange (default 10s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithBatchSize caps the number of changes in one UPDATE (default 500);
// a message is also cut when it nears the 64 KB DNS message limit. A batch
// size of 1 sends one UPDATE per change (what the benchmarks compare with).
func WithBatchSize(n int) Option { return func(c *Client) { c.batch = n } }

// New returns a client for the server at addr ("192.0.2.53:53").
func New(addr string, opts ...Option) *Client {
	c := &Client{server: addr, timeout: 10 * time.Second, batch: 500, maxBytes: 60000}
	for _, o := range opts {
		o(c)
	}
	if c.batch <= 0 {
		c.batch = 500
	}
	return c
}

// Server is the address of the primary.
func (c *Client) Server() string { return c.server }

func (c *Client) sign(m *dns.Msg) {
	if c.keyName != "" {
		m.SetTsig(c.keyName, c.algorithm, 300, time.Now().Unix())
	}
}

func (c *Client) secrets() map[string]string {
	if c.keyName == "" {
		return nil
	}
	return map[string]string{c.keyName: c.secret}
}

// Read transfers the zone (AXFR) and returns its records without the SOA,
// with the SOA as the state token.
func (c *Client) Read(ctx context.Context, name string) (*zone.Snapshot, error) {
	name = zone.Canonical(name)
	ctx, cancel := context.WithTimeout(ctx, 10*c.timeout)
	defer cancel()
	// Ask for the SOA first: a server answers an AXFR of a zone it does not
	// serve with an unsigned NOTAUTH, which reads like a key problem.
	if _, err := c.soa(ctx, name); err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.server)
	if err != nil {
		return nil, fmt.Errorf("axfr %s from %s: %w", name, c.server, err)
	}
	// Transfer has no context: closing the connection ends a transfer that
	// outlives ctx.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	t := &dns.Transfer{Conn: &dns.Conn{Conn: conn}, TsigSecret: c.secrets(), ReadTimeout: c.timeout}
	m := new(dns.Msg)
	m.SetAxfr(name)
	c.sign(m)
	ch, err := t.In(m, c.server)
	if err != nil {
		conn.Close()
		return nil, c.wrap(fmt.Sprintf("axfr %s from %s", name, c.server), err)
	}
	snap := &zone.Snapshot{Zone: name}
	var soa *dns.SOA
	var firstErr error
	// Keep the messages and convert once their total is known: growing one
	// slice through 100,000 records costs more than the transfer's parsing.
	var batches [][]dns.RR
	total := 0
	for env := range ch {
		if env.Error != nil {
			if firstErr == nil {
				firstErr = env.Error
			}
			continue
		}
		batches = append(batches, env.RR)
		total += len(env.RR)
	}
	snap.Records = make([]zone.Record, 0, total)
	for _, rrs := range batches {
		for _, rr := range rrs {
			if s, ok := rr.(*dns.SOA); ok {
				if soa == nil {
					soa = s
				}
				continue
			}
			snap.Records = append(snap.Records, toRecord(rr))
		}
	}
	if firstErr != nil {
		if ctx.Err() != nil {
			firstErr = ctx.Err()
		}
		return nil, c.wrap(fmt.Sprintf("axfr %s from %s", name, c.server), firstErr)
	}
	if soa == nil {
		return nil, fmt.Errorf("axfr %s from %s: no SOA in the transfer", name, c.server)
	}
	snap.State, snap.Serial = soaState(soa), soa.Serial
	return snap, nil
}

// State asks the server for the zone's SOA: the cheap check an apply makes
// before it changes anything.
func (c *Client) State(ctx context.Context, name string) (string, error) {
	soa, err := c.soa(ctx, zone.Canonical(name))
	if err != nil {
		return "", err
	}
	return soaState(soa), nil
}

func (c *Client) soa(ctx context.Context, name string) (*dns.SOA, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeSOA)
	c.sign(m)
	in, err := c.exchange(ctx, m)
	if err != nil {
		return nil, c.wrap("query SOA of "+name, err)
	}
	if in.Rcode == dns.RcodeRefused || in.Rcode == dns.RcodeNotZone {
		return nil, fmt.Errorf("query SOA of %s at %s: %w (the server is not authoritative for it)", name, c.server, zone.ErrUnknownZone)
	}
	if err := rcodeErr(in.Rcode); err != nil {
		return nil, c.wrap(fmt.Sprintf("query SOA of %s at %s", name, c.server), err)
	}
	for _, rr := range in.Answer {
		if s, ok := rr.(*dns.SOA); ok && strings.EqualFold(s.Hdr.Name, name) {
			return s, nil
		}
	}
	return nil, fmt.Errorf("query SOA of %s at %s: %w (the server is not authoritative for it)", name, c.server, zone.ErrUnknownZone)
}

// Apply sends the changes as UPDATE messages. The first message requires
// the zone's SOA to match state; every message requires each changed RRset
// to be what the change says it was. It returns one result per change.
// When a batch is refused, its changes get the error and later changes get
// zone.ErrNotAttempted; earlier batches stay applied.
func (c *Client) Apply(ctx context.Context, name, state string, changes []zone.Change) ([]zone.Result, error) {
	name = zone.Canonical(name)
	results := make([]zone.Result, len(changes))
	for i, ch := range changes {
		results[i] = zone.Result{Change: ch, Err: zone.ErrNotAttempted}
	}
	var soa dns.RR
	if state != "" {
		rr, err := dns.NewRR(name + " 0 IN SOA " + state)
		if err != nil {
			return results, fmt.Errorf("update %s: state %q is not an SOA: %w", name, state, err)
		}
		soa = rr
	}
	for start := 0; start < len(changes); {
		m := new(dns.Msg)
		m.SetUpdate(name)
		if start == 0 && soa != nil {
			m.Used([]dns.RR{dns.Copy(soa)})
		}
		end, err := c.fill(m, name, changes, start)
		if err != nil {
			for i := start; i < len(changes); i++ {
				results[i].Err = err
			}
			return results, err
		}
		c.sign(m)
		// A connection per message: miekg/dns signs a second message on a
		// connection as a continuation of the first (the previous MAC is
		// mixed in, as for a zone transfer), which servers reject as BADSIG.
		in, err := c.exchange(ctx, m)
		if err == nil {
			err = rcodeErr(in.Rcode)
		}
		if err != nil {
			err = c.wrap(fmt.Sprintf("update %s at %s (changes %d–%d of %d)", name, c.server, start+1, end, len(changes)), err)
			for i := start; i < end; i++ {
				results[i].Err = err
			}
			return results, err
		}
		for i := start; i < end; i++ {
			results[i].Err = nil
		}
		start = end
	}
	return results, nil
}

// fill adds changes from start to m until the batch size or the message size
// limit, and returns the index after the last one added.
func (c *Client) fill(m *dns.Msg, name string, changes []zone.Change, start int) (int, error) {
	size := m.Len()
	i := start
	for ; i < len(changes) && i-start < c.batch; i++ {
		ch := changes[i]
		if !zone.InZone(ch.Name, name) {
			return i, fmt.Errorf("change %s: %s is not in zone %s", ch.Key(), ch.Name, name)
		}
		old, err := toRRs(ch.Old)
		if err != nil {
			return i, err
		}
		nw, err := toRRs(ch.New)
		if err != nil {
			return i, err
		}
		// Size without compression: an upper bound, so the message never
		// exceeds what was counted.
		n := 0
		for _, rr := range old {
			n += dns.Len(rr)
		}
		for _, rr := range nw {
			n += dns.Len(rr)
		}
		n += 2 * (len(ch.Name) + 12)
		if i > start && size+n > c.maxBytes {
			break
		}
		size += n
		if len(old) > 0 {
			m.Used(old)
			m.RemoveRRset([]dns.RR{blank(ch.Name, ch.Type)})
		} else {
			m.RRsetNotUsed([]dns.RR{blank(ch.Name, ch.Type)})
		}
		if len(nw) > 0 {
			m.Insert(nw)
		}
	}
	return i, nil
}

func (c *Client) client() *dns.Client {
	return &dns.Client{Net: "tcp", Timeout: c.timeout, TsigSecret: c.secrets()}
}

// exchange sends m over TCP and waits for the answer, within the client's
// timeout and ctx.
func (c *Client) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	in, _, err := c.client().ExchangeContext(ctx, m, c.server)
	return in, err
}

// wrap maps TSIG failures to zone.ErrAuth with a sentence that says what
// to check, and wraps everything with what was being done.
func (c *Client) wrap(what string, err error) error {
	if errors.Is(err, dns.ErrSig) || errors.Is(err, dns.ErrAuth) || errors.Is(err, dns.ErrNoSig) || errors.Is(err, dns.ErrSecret) || errors.Is(err, dns.ErrTime) || errors.Is(err, zone.ErrAuth) ||
		strings.Contains(err.Error(), "NOTAUTH") || strings.Contains(err.Error(), "rcode 9") {
		return fmt.Errorf("%s: %w: the server refused TSIG key %q (check its name, algorithm and secret) (%v)", what, zone.ErrAuth, strings.TrimSuffix(c.keyName, "."), err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// rcodeErr maps an answer's RCODE to the zone errors.
func rcodeErr(rcode int) error {
	switch rcode {
	case dns.RcodeSuccess:
		return nil
	case dns.RcodeNXRrset, dns.RcodeYXRrset, dns.RcodeYXDomain, dns.RcodeNameError:
		return fmt.Errorf("%w (server answered %s)", zone.ErrConflict, dns.RcodeToString[rcode])
	case dns.RcodeNotAuth:
		return fmt.Errorf("%w (server answered NOTAUTH)", zone.ErrAuth)
	case dns.RcodeRefused:
		return fmt.Errorf("server answered REFUSED (is the key allowed to transfer and update this zone?)")
	case dns.RcodeNotZone:
		return fmt.Errorf("%w (server answered NOTZONE)", zone.ErrUnknownZone)
	default:
		return fmt.Errorf("server answered %s", dns.RcodeToString[rcode])
	}
}

// soaState is the SOA's data in presentation format: "ns. host. 5 3600 …".
func soaState(s *dns.SOA) string { return rdata(s) }

// rdata is the record's data in presentation format. The common types are
// written directly: formatting the whole record and cutting the header off
// is most of the cost of reading a large zone.
func rdata(rr dns.RR) string {
	switch r := rr.(type) {
	case *dns.A:
		if ip4 := r.A.To4(); ip4 != nil {
			return ip4.String()
		}
	case *dns.AAAA:
		if r.AAAA.To4() == nil {
			return r.AAAA.String()
		}
	case *dns.CNAME:
		return strings.ToLower(r.Target)
	case *dns.PTR:
		return strings.ToLower(r.Ptr)
	case *dns.NS:
		return strings.ToLower(r.Ns)
	case *dns.TXT:
		if d, ok := plainTXT(r.Txt); ok {
			return d
		}
	}
	return strings.TrimPrefix(rr.String(), rr.Header().String())
}

// plainTXT writes TXT strings that need no escaping as a zone file would;
// anything else goes through miekg/dns's escaping.
func plainTXT(ss []string) (string, bool) {
	var b strings.Builder
	for i, t := range ss {
		for j := 0; j < len(t); j++ {
			if c := t[j]; c < ' ' || c > '~' || c == '"' || c == '\\' {
				return "", false
			}
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteByte('"')
		b.WriteString(t)
		b.WriteByte('"')
	}
	return b.String(), true
}

func toRecord(rr dns.RR) zone.Record {
	h := rr.Header()
	return zone.Record{
		Name: strings.ToLower(h.Name),
		Type: dns.TypeToString[h.Rrtype],
		TTL:  h.Ttl,
		Data: rdata(rr),
	}
}

func toRRs(rs []zone.Record) ([]dns.RR, error) {
	out := make([]dns.RR, 0, len(rs))
	for _, r := range rs {
		rr, err := dns.NewRR(r.Name + " " + strconv.FormatUint(uint64(r.TTL), 10) + " IN " + r.Type + " " + r.Data)
		if err != nil {
			return nil, fmt.Errorf("record %q: %w", r.String(), err)
		}
		out = append(out, rr)
	}
	return out, nil
}

// blank is an RR with only a name and a type, for RRset-level sections.
func blank(name, typ string) dns.RR {
	return &dns.ANY{Hdr: dns.RR_Header{Name: name, Rrtype: dns.StringToType[typ], Class: dns.ClassINET}}
}
