package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/internal/obs"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// hubExtensions are the optional hub components (modules, enricher,
// loader, extra services). Each lives in its own file of this package and
// appends itself here in its init; `hub run` attaches them in order, and
// each owns the top-level config section of its name.
var hubExtensions []hub.Extension

func init() {
	hubCommands["run"] = command{summary: "run a hub (--config FILE [--check])", run: hubRun}
	hubCommands["status"] = command{summary: "show a hub's raft role, members, indexes, loader lag and sensors", run: hubStatus}
	hubCommands["join"] = command{summary: "add a hub to the cluster (ask the leader)", run: hubJoin}
	hubCommands["leave"] = command{summary: "remove a hub from the cluster (ask the leader)", run: hubLeave}
}

func hubRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("jasper hub run", flag.ContinueOnError)
	path := fs.String("config", "", "hub configuration file (YAML; required)")
	check := fs.Bool("check", false, "validate the configuration, print the effective configuration and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("--config is required")
	}
	cfg, err := hub.LoadConfig(*path)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config %s: %w", *path, err)
	}
	var names []string
	for _, e := range hubExtensions {
		if e.Name != "" {
			names = append(names, e.Name)
		}
	}
	if err := cfg.CheckSections(names...); err != nil {
		return fmt.Errorf("config %s: %w", *path, err)
	}
	if cfg.HasSection("clickhouse") && !slices.Contains(names, "clickhouse") {
		return fmt.Errorf("config %s: line %d: clickhouse: this binary has no ClickHouse loader to read it", *path, cfg.ClickHouse.Line)
	}
	if *check {
		if _, err := pki.ServerConfig(cfg.TLS); err != nil {
			return fmt.Errorf("config %s: tls: %w", *path, err)
		}
		for _, e := range hubExtensions {
			if e.Check == nil {
				continue
			}
			if err := e.Check(cfg); err != nil {
				return fmt.Errorf("config %s: %w", *path, err)
			}
		}
		out, err := yaml.Marshal(cfg.Redacted())
		if err != nil {
			return err
		}
		fmt.Printf("# effective configuration of %s\n%s", *path, out)
		fmt.Fprintf(os.Stderr, "config %s: ok\n", *path)
		return nil
	}
	log := obs.NewLogger(os.Stderr, cfg.Log.Format, cfg.Log.Level)
	hub.ApplyRuntime(cfg.Runtime, log)
	reg := obs.NewRegistry()
	h, err := hub.New(cfg, hub.Deps{Log: log, Registry: reg, Version: version})
	if err != nil {
		return err
	}
	if err := h.Attach(hubExtensions...); err != nil {
		return err
	}
	if err := h.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	// Stop in reverse order of start, bounded.
	stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return h.Stop(stopCtx)
}

// hubAdminFlags are the flags of the admin client commands.
type hubAdminFlags struct {
	addr, ca, cert, key string
	timeout             time.Duration
	plaintext           bool
}

func (f *hubAdminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "hub", "", "hub gRPC address host:port (required)")
	fs.StringVar(&f.ca, "ca", "", "federation CA certificate (PEM; required)")
	fs.StringVar(&f.cert, "cert", "", "admin certificate (PEM; required)")
	fs.StringVar(&f.key, "key", "", "admin key (PEM; required)")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "deadline of the call")
	fs.BoolVar(&f.plaintext, "insecure-plaintext-for-demo", false, "talk to a hub run with ingest.insecure_plaintext_for_demo (no TLS)")
}

func (f *hubAdminFlags) client() (jasperv1.AdminServiceClient, func(), error) {
	var creds credentials.TransportCredentials
	switch {
	case f.addr == "":
		return nil, nil, errors.New("--hub is required")
	case f.plaintext:
		creds = insecure.NewCredentials()
	case f.ca == "" || f.cert == "" || f.key == "":
		return nil, nil, errors.New("--ca, --cert and --key are required (an admin certificate: jasper ca issue --role admin)")
	}
	if creds == nil {
		tc, err := pki.ClientConfig(pki.Files{CA: f.ca, Cert: f.cert, Key: f.key})
		if err != nil {
			return nil, nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	cc, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, nil, fmt.Errorf("connect %s: %w", f.addr, err)
	}
	return jasperv1.NewAdminServiceClient(cc), func() { cc.Close() }, nil
}

func hubCallErr(op, addr string, err error) error {
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("%s at %s: %s: %s", op, addr, s.Code(), s.Message())
	}
	return fmt.Errorf("%s at %s: %w", op, addr, err)
}

func hubStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("jasper hub status", flag.ContinueOnError)
	var af hubAdminFlags
	af.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, closeFn, err := af.client()
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(ctx, af.timeout)
	defer cancel()
	var hdr metadata.MD
	resp, err := c.Status(ctx, &jasperv1.StatusRequest{}, grpc.Header(&hdr))
	if err != nil {
		return hubCallErr("status", af.addr, err)
	}
	fsmIndex, stateHash := first(hdr.Get("jasper-fsm-index")), first(hdr.Get("jasper-state-hash"))
	if *asJSON {
		b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(resp)
		if err != nil {
			return err
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		m["fsm_index"], m["state_hash"] = fsmIndex, stateHash
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	}
	leader := resp.LeaderId
	if leader == "" {
		leader = "(none)"
	}
	fmt.Printf("node %s: %s; leader %s at %s\n", resp.NodeId, resp.RaftState, leader, resp.LeaderAddress)
	fmt.Printf("indexes: commit %d, applied %d, last %d, fsm %s\n", resp.CommitIndex, resp.AppliedIndex, resp.LastLogIndex, fsmIndex)
	fmt.Printf("loader: loaded through index %d, lag %d rows\n", resp.LoadedIndex, resp.LoaderLagRows)
	fmt.Printf("state hash: %s\n", stateHash)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nMEMBER\tRAFT ADDRESS\tSUFFRAGE\n")
	for _, m := range resp.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Id, m.RaftAddress, m.Suffrage)
	}
	fmt.Fprintf(tw, "\nSENSOR\tCOUNTRY\tLAST SEQ\tLAST BIN\tLAST BATCH\tBATCHES\tROWS\tPACKETS\n")
	for _, s := range resp.Sensors {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\n", s.SensorId, s.Country, s.LastSequence,
			time.Unix(s.LastBinStart, 0).UTC().Format(time.RFC3339), time.UnixMilli(s.LastBatchAtMs).UTC().Format(time.RFC3339),
			s.Batches, s.Rows, s.Packets)
	}
	return tw.Flush()
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func hubJoin(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("jasper hub join", flag.ContinueOnError)
	var af hubAdminFlags
	af.register(fs)
	id := fs.String("id", "", "node id of the hub to add (required)")
	raftAddr := fs.String("raft-addr", "", "raft address of the hub to add (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id == "" || *raftAddr == "" {
		return errors.New("--id and --raft-addr are required")
	}
	c, closeFn, err := af.client()
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(ctx, af.timeout)
	defer cancel()
	if _, err := c.Join(ctx, &jasperv1.JoinRequest{NodeId: *id, RaftAddress: *raftAddr}); err != nil {
		return hubCallErr("join", af.addr, err)
	}
	fmt.Printf("%s (%s) joined the cluster\n", *id, *raftAddr)
	return nil
}

func hubLeave(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("jasper hub leave", flag.ContinueOnError)
	var af hubAdminFlags
	af.register(fs)
	id := fs.String("id", "", "node id of the hub to remove (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("--id is required")
	}
	c, closeFn, err := af.client()
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(ctx, af.timeout)
	defer cancel()
	if _, err := c.Leave(ctx, &jasperv1.LeaveRequest{NodeId: *id}); err != nil {
		return hubCallErr("leave", af.addr, err)
	}
	fmt.Printf("%s left the cluster\n", *id)
	return nil
}
