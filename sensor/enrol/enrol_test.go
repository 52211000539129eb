package enrol

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jasperfed/jasper/internal/config"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The enrolment flow itself is tested end to end against real hubs in
// hub/enrol (enrol_test.go, store_test.go) and cmd/jasper.

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Hubs = []string{"hub:7444"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key    string
		mutate func(*Config)
	}{
		{"enrol.hubs", func(c *Config) { c.Hubs = nil }},
		{"enrol.hubs[1]", func(c *Config) { c.Hubs = append(c.Hubs, "") }},
		{"enrol.dir", func(c *Config) { c.Dir = "" }},
		{"enrol.renew_at", func(c *Config) { c.RenewAt = 1 }},
		{"enrol.renew_at", func(c *Config) { c.RenewAt = 0 }},
		{"enrol.retry_min", func(c *Config) { c.RetryMax = config.Duration(time.Millisecond) }},
		{"enrol.call_timeout", func(c *Config) { c.CallTimeout = 0 }},
	} {
		c := good
		c.Hubs = append([]string(nil), good.Hubs...)
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("mutating %s: got %v, want an error naming it", tc.key, err)
		}
	}
	f := good.Files()
	if f.CA != filepath.Join(good.Dir, "ca.pem") || f.Cert != filepath.Join(good.Dir, "cert.pem") || f.Key != filepath.Join(good.Dir, "key.pem") {
		t.Fatalf("files %+v", f)
	}
}

func TestRefusalFromStatus(t *testing.T) {
	st, err := status.New(codes.PermissionDenied, "token_reused: x").WithDetails(&jasperv1.EnrolRefusal{
		Reason: jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_TOKEN_REUSED, Detail: "x"})
	if err != nil {
		t.Fatal(err)
	}
	r := asRefusal("h:1", st.Err())
	if r == nil || r.Reason != jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_TOKEN_REUSED || r.Hub != "h:1" {
		t.Fatalf("refusal %+v", r)
	}
	wrapped := errors.Join(errors.New("context"), r)
	if ReasonOf(wrapped) != jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_TOKEN_REUSED {
		t.Fatal("ReasonOf does not see through wrapping")
	}
	if asRefusal("h", status.Error(codes.Unavailable, "down")) != nil || ReasonOf(errors.New("x")) != jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_UNSPECIFIED {
		t.Fatal("plain errors carry a refusal")
	}
}

func TestEnrolRefusesLocally(t *testing.T) {
	ca, err := pki.NewCA("t", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Hubs = []string{"127.0.0.1:1"} // never dialled: every case fails first
	cfg.Dir = t.TempDir()
	if _, err := Enrol(t.Context(), cfg, EnrolOptions{Token: "garbage", CAPEM: ca.PEM}); !errors.Is(err, pki.ErrBadToken) {
		t.Fatalf("garbage token: %v", err)
	}
	if _, err := New(cfg, Deps{}); err == nil || !strings.Contains(err.Error(), "not enrolled") {
		t.Fatalf("renewer on an empty folder: %v", err)
	}
}
