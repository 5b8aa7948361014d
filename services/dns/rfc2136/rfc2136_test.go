package rfc2136_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ops/switchboard/services/dns/knottest"
	"github.com/switchboard-ops/switchboard/services/dns/providertest"
	"github.com/switchboard-ops/switchboard/services/dns/rfc2136"
	"github.com/switchboard-ops/switchboard/services/dns/zone"
)

func TestConformanceAgainstKnot(t *testing.T) {
	providertest.Run(t, func(t *testing.T) (providertest.Provider, string) {
		srv := knottest.Start(t, knottest.Zone{Name: "example.test."})
		return rfc2136.New(srv.Addr, rfc2136.WithTSIG(srv.KeyName, srv.Algorithm, srv.Secret), rfc2136.WithTimeout(5*time.Second)), "example.test."
	})
}

func TestAWrongTSIGKeyIsAClearError(t *testing.T) {
	srv := knottest.Start(t, knottest.Zone{Name: "example.test."})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cases := []struct {
		name string
		c    *rfc2136.Client
	}{
		{"a wrong secret", rfc2136.New(srv.Addr, rfc2136.WithTSIG(srv.KeyName, srv.Algorithm, "c2VjcmV0IHRoYXQgaXMgd3Jvbmc="))},
		{"an unknown key name", rfc2136.New(srv.Addr, rfc2136.WithTSIG("intruder.", srv.Algorithm, srv.Secret))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.Read(ctx, "example.test.")
			if !errors.Is(err, zone.ErrAuth) || !strings.Contains(err.Error(), "TSIG key") {
				t.Fatalf("read with %s: err = %v, want ErrAuth naming the TSIG key", tc.name, err)
			}
			_, err = tc.c.Apply(ctx, "example.test.", "", []zone.Change{{Name: "x.example.test.", Type: "A", New: []zone.Record{{Name: "x.example.test.", Type: "A", TTL: 60, Data: "192.0.2.1"}}}})
			if !errors.Is(err, zone.ErrAuth) {
				t.Fatalf("apply with %s: err = %v, want ErrAuth", tc.name, err)
			}
		})
	}
}
