package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
	"github.com/switchboard-ops/switchboard/proto/sb/wire"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/chatin"
	"github.com/switchboard-ops/switchboard/kit/emit"
)

// Exit codes of say.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitDenied      = 3
	exitUnavailable = 4
)

// say is the CLI bridge (plan B when Slack is down): it sends text to the
// chat ingress on sb.chat.in.cli like any adapter, then follows the command's
// thread on the CHAT stream until the job ends.
func say(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("say", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	channel := fs.String("channel", "cli", "channel to talk in")
	asJSON := fs.Bool("json", false, "print each post as a JSON line")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to follow the thread")
	url := fs.String("nats", getenv("SB_NATS_URL"), "NATS URL (default: the local switchboard's)")
	creds := fs.String("creds", getenv("SB_NATS_CREDS"), "NATS credentials file")
	tlsCA := fs.String("tls-ca", getenv("SB_NATS_TLS_CA"), "CA that signed the NATS servers' certificates (a cluster with TLS)")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "switchboard say: %v\n\n%s", err, usage)
		return exitUsage
	}
	text := strings.TrimSpace(strings.Join(fs.Args(), " "))
	if text == "" {
		fmt.Fprintf(stderr, "switchboard say: nothing to say; try: switchboard say help\n")
		return exitUsage
	}
	cfg := bus.Config{URL: *url, Creds: *creds, Token: getenv("SB_NATS_TOKEN"), Name: "switchboard say",
		TLS: bus.TLSConfig{CA: *tlsCA, Cert: getenv("SB_NATS_TLS_CERT"), Key: getenv("SB_NATS_TLS_KEY")}}
	if cfg.URL == "" {
		// The all-in-one server leaves its URL and token in the data dir.
		dir := defaultDataDir(getenv)
		b, err := os.ReadFile(filepath.Join(dir, bus.URLFileName))
		if err != nil {
			fmt.Fprintf(stderr, "switchboard say: no switchboard is running here (no %s in %s); start one with `go run ./cmd/switchboard`, or give --nats\n", bus.URLFileName, dir)
			return exitUnavailable
		}
		cfg.URL = strings.TrimSpace(string(b))
		if cfg.Token == "" {
			cfg.TokenFile = filepath.Join(dir, bus.TokenFileName)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	nc, err := bus.Connect(cctx, cfg, log)
	ccancel()
	if err != nil {
		fmt.Fprintf(stderr, "switchboard say: %v\n", err)
		return exitUnavailable
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard say: %v\n", err)
		return exitUnavailable
	}
	who := "cli"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	msg := &chatv1.ChatMessage{
		Id:           emit.NewID(),
		Conversation: &chatv1.Conversation{Adapter: "cli", Channel: *channel},
		Author:       &chatv1.Identity{Id: "cli:" + who, Name: who},
		Text:         text,
	}
	// Follow the channel from now on before sending, so no post can slip by.
	cons, err := js.OrderedConsumer(ctx, wire.StreamChat, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{wire.ChatPostSubject("cli", *channel)},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		fmt.Fprintf(stderr, "switchboard say: follow channel %s: %v\n", *channel, err)
		return exitUnavailable
	}
	it, err := cons.Messages()
	if err != nil {
		fmt.Fprintf(stderr, "switchboard say: follow channel %s: %v\n", *channel, err)
		return exitUnavailable
	}
	defer it.Stop()
	reply, err := chatin.Send(ctx, nc, "cli", msg)
	if errors.Is(err, chatin.ErrNoChat) {
		err = errors.New("no chat service answers on the bus; is switchboard running?")
	}
	if err != nil {
		fmt.Fprintf(stderr, "switchboard say: %v\n", err)
		return exitUnavailable
	}
	code := exitCode(reply)
	if reply.GetStatus() == chatv1.IngressStatus_INGRESS_STATUS_EXISTING {
		fmt.Fprintf(stderr, "%s\n", reply.GetMessage())
		if reply.GetFinal() {
			if reply.GetJobState() != "succeeded" {
				return exitFailed
			}
			return exitOK
		}
	}
	// Follow the thread until the command's final post arrives.
	thread := reply.GetConversation().GetThread()
	for {
		m, err := next(ctx, it)
		if err != nil {
			fmt.Fprintf(stderr, "switchboard say: stopped following job %s: %v\n", reply.GetJobId(), err)
			return exitFailed
		}
		var p chatv1.ChatPost
		if getenv("SB_SAY_DEBUG") != "" {
			fmt.Fprintf(stderr, "debug: %s %s\n", m.Subject(), m.Data())
		}
		if err := wire.Unmarshal(m.Data(), &p); err != nil || p.GetConversation().GetThread() != thread {
			continue
		}
		if *asJSON {
			b, _ := wire.Marshal(&p)
			fmt.Fprintf(stdout, "%s\n", compact(b))
		} else {
			printPost(stdout, stderr, &p)
		}
		if p.GetCommandId() != reply.GetCommandId() {
			continue
		}
		switch p.GetKind() {
		case chatv1.Kind_KIND_RESULT:
			return code
		case chatv1.Kind_KIND_ERROR:
			if code == exitOK {
				code = exitFailed
			}
			return code
		case chatv1.Kind_KIND_NOTICE:
			if reply.GetFinal() {
				return code
			}
		}
	}
}

// next returns the next post on the followed channel, or the context's
// error when it ends first.
func next(ctx context.Context, it jetstream.MessagesContext) (jetstream.Msg, error) {
	type result struct {
		m   jetstream.Msg
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := it.Next()
		ch <- result{m, err}
	}()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-ctx.Done():
		it.Stop()
		return nil, ctx.Err()
	}
}

func exitCode(r *chatv1.ChatReply) int {
	switch r.GetStatus() {
	case chatv1.IngressStatus_INGRESS_STATUS_INVALID:
		return exitUsage
	case chatv1.IngressStatus_INGRESS_STATUS_DENIED:
		return exitDenied
	case chatv1.IngressStatus_INGRESS_STATUS_UNAVAILABLE:
		return exitUnavailable
	case chatv1.IngressStatus_INGRESS_STATUS_REJECTED:
		return exitFailed
	}
	return exitOK
}

func printPost(stdout, stderr io.Writer, p *chatv1.ChatPost) {
	switch p.GetKind() {
	case chatv1.Kind_KIND_MESSAGE:
		return
	case chatv1.Kind_KIND_PROGRESS:
		fmt.Fprintf(stdout, "… %s\n", p.GetText())
	case chatv1.Kind_KIND_ERROR:
		fmt.Fprintf(stderr, "✗ %s\n", p.GetText())
	default:
		fmt.Fprintf(stdout, "%s\n", p.GetText())
	}
	for _, a := range p.GetAttachments() {
		where := a.GetUrl()
		if where == "" {
			where = fmt.Sprintf("%d bytes inline", len(a.GetData()))
		}
		fmt.Fprintf(stdout, "  [attachment %s: %s]\n", a.GetName(), where)
	}
}

func compact(b []byte) string {
	// protojson adds random spaces on purpose; keep one JSON value per line.
	return strings.ReplaceAll(string(b), "\n", " ")
}
