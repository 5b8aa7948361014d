package inventory_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/kit/bus"
	"github.com/switchboard-ops/switchboard/kit/inventory"
	"github.com/switchboard-ops/switchboard/kit/natstest"
	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
)

func host(name, env, role string, backends ...string) *inventoryv1.Host {
	return &inventoryv1.Host{Name: name, Environment: env, Role: role, Backends: backends, Ipv4: "10.0.0.1", State: inventoryv1.HostState_HOST_STATE_ACTIVE}
}

func TestPublishLoadWatchDiff(t *testing.T) {
	ctx := natstest.Context(t, 30*time.Second)
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, s))
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	kv, err := inventory.Bucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inventory.Load(ctx, kv); err != inventory.ErrEmpty {
		t.Fatalf("Load of an empty bucket: %v, want ErrEmpty", err)
	}

	revs := make(chan *inventory.Snapshot, 10)
	go inventory.Watch(ctx, kv, func(s *inventory.Snapshot) { revs <- s })

	v1 := []*inventoryv1.Host{host("web-1", "prod", "web", "web"), host("web-2", "prod", "web", "web"), host("db-1", "prod", "db")}
	if _, err := inventory.Publish(ctx, kv, "r1", v1, map[string]string{"prod/api/web": "1.0"}); err != nil {
		t.Fatal(err)
	}
	first := <-revs
	if first.Meta.GetRevision() != "r1" || len(first.Hosts) != 3 {
		t.Fatalf("watch saw %v with %d hosts", first.Meta, len(first.Hosts))
	}
	if got := first.InBackend("web"); len(got) != 2 || got[0].GetName() != "web-1" {
		t.Fatalf("InBackend(web) = %v", got)
	}
	if !first.HasBackend("web") || first.HasBackend("nope") {
		t.Fatalf("backends = %v", first.Meta.GetBackends())
	}

	v2 := []*inventoryv1.Host{host("web-1", "prod", "web", "web"), host("web-2", "prod", "api", "api"), host("web-3", "prod", "web", "web")}
	v2[0].Ipv4 = "10.0.0.9"
	if _, err := inventory.Publish(ctx, kv, "r2", v2, nil); err != nil {
		t.Fatal(err)
	}
	second := <-revs
	if second.Meta.GetRevision() != "r2" || second.Host("db-1") != nil || second.Host("web-3") == nil {
		t.Fatalf("second revision: %v %v", second.Meta, second.Names())
	}
	d := inventory.Diff(first, second)
	if !slices.Equal(d.Added, []string{"web-3"}) || !slices.Equal(d.Removed, []string{"db-1"}) ||
		len(d.Moved) != 1 || d.Moved[0].GetHost() != "web-2" || d.Moved[0].GetToRole() != "api" ||
		!slices.Equal(d.Changed, []string{"web-1"}) {
		t.Fatalf("diff = %v", d)
	}

	if _, err := inventory.Publish(ctx, kv, "r3", []*inventoryv1.Host{host("Bad_Name", "prod", "web")}, nil); err == nil {
		t.Fatal("a host name that is not a DNS label was published")
	}
	if _, err := inventory.Publish(ctx, kv, "r3", []*inventoryv1.Host{host("a", "p", "r"), host("a", "p", "r")}, nil); err == nil {
		t.Fatal("a duplicate host was published")
	}
}

func TestCacheFollowsTheLatestRevision(t *testing.T) {
	ctx := natstest.Context(t, 30*time.Second)
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, s))
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	kv, err := inventory.Bucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	c := inventory.NewCache(kv)
	if _, err := c.Get(ctx); err != inventory.ErrEmpty {
		t.Fatalf("Get before anything is published: %v, want ErrEmpty", err)
	}
	if _, err := inventory.Publish(ctx, kv, "r1", []*inventoryv1.Host{host("web-1", "prod", "web", "web")}, nil); err != nil {
		t.Fatal(err)
	}
	if snap, err := c.Get(ctx); err != nil || snap.Meta.GetRevision() != "r1" {
		t.Fatalf("Get after r1 without Run: %v, %v", snap, err)
	}
	go c.Run(ctx)
	if _, err := inventory.Publish(ctx, kv, "r2", []*inventoryv1.Host{host("web-2", "prod", "web", "web")}, nil); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		snap, err := c.Get(ctx)
		if err != nil {
			return err
		}
		if snap.Meta.GetRevision() != "r2" || snap.Host("web-2") == nil {
			return errors.New("cache still at " + snap.Meta.GetRevision())
		}
		return nil
	})
}
