package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/hub/enrol"
	"github.com/jasperfed/jasper/internal/config"
	"github.com/jasperfed/jasper/internal/obs"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	senrol "github.com/jasperfed/jasper/sensor/enrol"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func init() {
	caCommands["token"] = command{summary: "create a one-time join token for a sensor", run: caToken}
	caCommands["revoke"] = command{summary: "revoke a sensor's certificates on the federation (admin)", run: caRevoke}
	sensorCommands["enrol"] = command{summary: "enrol this sensor with a join token (makes its keys, gets a certificate)", run: sensorEnrol}
	sensorCommands["renew"] = command{summary: "renew this sensor's certificate now (re-attests if it expired)", run: sensorRenew}
	hubExtensions = append(hubExtensions, hub.Extension{Name: "enrol", Attach: attachEnrol})
}

// attachEnrol wires enrolment into a hub. The replicated module and the
// revocation check are always attached, so that every hub runs the same
// FSM modules and ingest refuses revoked certificates. The EnrolService
// runs when the `enrol:` section names ca_dir (the CA key signs sensor
// certificates): on the hub's mTLS gRPC port (renewal, revocation) and on
// its own enrolment port enrol.listen (enrolment, re-attestation; client
// certificate optional). Give every hub the CA key, or none: only the raft
// leader commits enrolments, and sensors try the hubs in turn.
func attachEnrol(h *hub.Hub) error {
	cfg := enrol.DefaultConfig()
	if err := h.Section("enrol", &cfg); err != nil {
		return err
	}
	mod := enrol.NewModule()
	h.RegisterModule(mod)
	h.SetRevocation(mod)
	wireCertExpiry(h, mod) // hub_certexpiry.go: the dashboards' sensors view shows certificate expiry
	if cfg.CADir == "" {
		h.Log().Info("enrol_disabled", "reason", "enrol.ca_dir not set: this hub signs no sensor certificates")
		return nil
	}
	ca, err := pki.LoadCA(config.Resolve(h.Config().Path, cfg.CADir))
	if err != nil {
		return fmt.Errorf("enrol.ca_dir: %w", err)
	}
	svc, err := enrol.NewService(cfg, enrol.Deps{
		CA: ca, Store: h.Store(), Module: mod, TLS: h.Config().TLS,
		Log: h.Log(), Registerer: h.Registerer(),
	})
	if err != nil {
		return err
	}
	h.RegisterGRPC(func(s *grpc.Server) { jasperv1.RegisterEnrolServiceServer(s, svc) })
	h.AddService(enrolService{svc})
	return nil
}

// enrolService adapts the enrolment port to hub.Service.
type enrolService struct{ s *enrol.Service }

func (e enrolService) Start(ctx context.Context) error { return e.s.Start(ctx) }
func (e enrolService) Stop(context.Context) error {
	e.s.Stop()
	return nil
}

// hubList is a repeatable, comma-separable list of hub addresses.
type hubList []string

func (l *hubList) String() string { return strings.Join(*l, ",") }
func (l *hubList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func enrolPrefixes(flagName string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range in {
		pp, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("--%s %q: %w", flagName, p, err)
		}
		if pp != pp.Masked() {
			return nil, fmt.Errorf("--%s %q has host bits set (did you mean %s?)", flagName, p, pp.Masked())
		}
		out = append(out, pp)
	}
	return out, nil
}

func caToken(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("jasper ca token", flag.ContinueOnError)
	dir := fs.String("dir", "", "folder holding ca.pem and ca-key.pem (required)")
	id := fs.String("id", "", "sensor id, e.g. sensor-jp-1 (required)")
	country := fs.String("country", "", "ISO 3166-1 alpha-2 country of the sensor (required)")
	var prefixes stringList
	fs.Var(&prefixes, "prefix", "darknet prefix the sensor may report on (CIDR; repeatable; at least one)")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token may be used")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case *dir == "":
		return errors.New("--dir is required (the folder of ca.pem and ca-key.pem)")
	case *id == "":
		return errors.New("--id is required")
	case *country == "":
		return errors.New("--country is required")
	case len(prefixes) == 0:
		return errors.New("--prefix is required (repeat it for several prefixes)")
	}
	ps, err := enrolPrefixes("prefix", prefixes)
	if err != nil {
		return err
	}
	ident := pki.Identity{Role: pki.RoleSensor, ID: *id, Country: strings.ToUpper(*country), Prefixes: ps}
	ca, err := pki.LoadCA(*dir)
	if err != nil {
		return err
	}
	s, tok, err := ca.NewJoinToken(ident, time.Now(), *ttl)
	if err != nil {
		return fmt.Errorf("join token for %s: %w", ident, err)
	}
	fmt.Fprintf(os.Stderr, "join token %s for %s (country %s, prefixes %v), usable once until %s:\n",
		tok.IDString(), ident, ident.Country, ident.Prefixes, tok.ExpiresAt.UTC().Format(time.RFC3339))
	fmt.Println(s)
	return nil
}

func caRevoke(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("jasper ca revoke", flag.ContinueOnError)
	var hubs hubList
	fs.Var(&hubs, "hub", "hub address (enrolment or gRPC port) to send the revocation to (required; repeatable)")
	id := fs.String("id", "", "sensor id to revoke (required)")
	reason := fs.String("reason", "", "why, for the record")
	caFile := fs.String("ca", "", "federation CA certificate (required)")
	cert := fs.String("cert", "", "admin certificate (required)")
	key := fs.String("key", "", "admin key (required)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case len(hubs) == 0:
		return errors.New("--hub is required")
	case *id == "":
		return errors.New("--id is required")
	}
	files := pki.Files{CA: *caFile, Cert: *cert, Key: *key}
	if err := files.Validate("admin"); err != nil {
		return fmt.Errorf("--ca, --cert and --key name the admin's TLS files: %w", err)
	}
	tc, err := pki.ClientConfig(files)
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hubs {
		conn, err := grpc.NewClient(h, grpc.WithTransportCredentials(credentials.NewTLS(tc.Clone())))
		if err != nil {
			errs = append(errs, fmt.Errorf("hub %s: %w", h, err))
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, *timeout)
		res, err := jasperv1.NewEnrolServiceClient(conn).Revoke(cctx, &jasperv1.RevokeRequest{SensorId: *id, Reason: *reason})
		cancel()
		conn.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("hub %s: %w", h, err))
			continue
		}
		fmt.Printf("revoked sensor %s on the federation (%d live certificates: %s)\n", *id, len(res.Serials), strings.Join(res.Serials, " "))
		return nil
	}
	return errors.Join(errs...)
}

func sensorEnrol(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("jasper sensor enrol", flag.ContinueOnError)
	cfg := senrol.DefaultConfig()
	var hubs hubList
	fs.Var(&hubs, "hub", "hub enrolment address host:port (required; repeatable or comma-separated: tried in order)")
	token := fs.String("token", "", "join token from `jasper ca token` (or - to read it from standard input)")
	caFile := fs.String("ca", "", "federation CA certificate to pin (required)")
	fs.StringVar(&cfg.Dir, "dir", cfg.Dir, "state folder for the keys and certificates")
	country := fs.String("country", "", "country to ask for (default: the token's; must match it)")
	var prefixes stringList
	fs.Var(&prefixes, "prefix", "prefix to ask for (repeatable; default: the token's; must match it)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case len(hubs) == 0:
		return errors.New("--hub is required")
	case *token == "":
		return errors.New("--token is required")
	case *caFile == "":
		return errors.New("--ca is required (the federation CA certificate, handed over with the token)")
	}
	if *token == "-" {
		b, err := io.ReadAll(io.LimitReader(os.Stdin, 8192))
		if err != nil {
			return fmt.Errorf("read token from standard input: %w", err)
		}
		*token = strings.TrimSpace(string(b))
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return fmt.Errorf("--ca: %w", err)
	}
	ps, err := enrolPrefixes("prefix", prefixes)
	if err != nil {
		return err
	}
	cfg.Hubs = hubs
	cert, err := senrol.Enrol(ctx, cfg, senrol.EnrolOptions{
		Token: *token, CAPEM: caPEM, Country: strings.ToUpper(*country), Prefixes: ps,
		Log: obs.NewLogger(os.Stderr, "text", *logLevel),
	})
	if err != nil {
		return err
	}
	id, _ := pki.FromCertificate(cert)
	f := cfg.Files()
	fmt.Printf("enrolled as %s (country %s, prefixes %v); certificate %s valid until %s\n", id, id.Country, id.Prefixes, f.Cert, cert.NotAfter.UTC().Format(time.RFC3339))
	fmt.Printf("sensor tls: {ca: %s, cert: %s, key: %s}\n", f.CA, f.Cert, f.Key)
	return nil
}

func sensorRenew(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("jasper sensor renew", flag.ContinueOnError)
	cfg := senrol.DefaultConfig()
	var hubs hubList
	fs.Var(&hubs, "hub", "hub enrolment address host:port (required; repeatable)")
	fs.StringVar(&cfg.Dir, "dir", cfg.Dir, "state folder written by `jasper sensor enrol`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg.Hubs = hubs
	r, err := senrol.New(cfg, senrol.Deps{Log: obs.DefaultLogger()})
	if err != nil {
		return err
	}
	if err := r.RenewNow(ctx); err != nil {
		return err
	}
	c, err := r.Current()
	if err != nil {
		return err
	}
	fmt.Printf("renewed: serial %s valid until %s\n", c.SerialNumber, c.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
