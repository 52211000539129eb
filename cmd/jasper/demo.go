package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/jasperfed/jasper/deploy/demo"
)

func init() {
	register("demo", "run a complete local federation: CA, 3 hubs, sensors, alerts, dashboard (--headless --duration D for a JSON summary)", runDemo)
}

func runDemo(ctx context.Context, args []string) error {
	def := demo.DefaultConfig()
	fs := flag.NewFlagSet("jasper demo", flag.ContinueOnError)
	dir := fs.String("dir", def.Dir, "state folder (certificates, configurations, raft data, logs); cleared of an earlier run's state")
	listen := fs.String("listen", def.Listen, "loopback address of the front page (dashboard and the demo mailbox/webhook pages)")
	headless := fs.Bool("headless", false, "run for --duration, then stop and print a JSON summary on stdout")
	duration := fs.Duration("duration", 0, "how long to run (headless: default 90s; otherwise until Ctrl-C)")
	ch := fs.String("clickhouse", "", `ClickHouse: "" starts a private server when clickhouse-server is installed, "off" uses the embedded rollups, or HOST:PORT of a server`)
	inProcess := fs.Bool("in-process", false, "run the hubs inside this process instead of as child processes (jasper hub run)")
	geo := fs.String("geo", "", "folder with country.mmdb and asn.mmdb (default: $JASPER_GEO_DIR, an earlier jasper geo build, else fixture databases)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *headless && *duration == 0 {
		*duration = 90 * time.Second
	}
	cfg := def
	cfg.Dir, cfg.Listen, cfg.ClickHouse, cfg.GeoDir = *dir, *listen, *ch, *geo
	deps := demo.Deps{Extensions: hubExtensions, Version: version, Progress: os.Stderr}
	if !*inProcess {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this binary to run the hubs (or use --in-process): %w", err)
		}
		deps.HubBinary = exe
	}
	d, err := demo.New(cfg, deps)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "jasper demo: starting a local federation in %s\n", cfg.Dir)
	t0 := time.Now()
	if err := d.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "\nready in %.1fs\n\n  dashboard  %s/\n  mailbox    %s/demo/mail\n  webhooks   %s/demo/webhooks\n\n  logins (dashboard):\n",
		time.Since(t0).Seconds(), d.URL(), d.URL(), d.URL())
	for _, l := range d.Logins() {
		who := "all countries"
		if l.Country != "" {
			who = "host data of " + l.Country
		}
		fmt.Fprintf(os.Stderr, "    %-12s %-24s password %s\n", l.Name, "("+l.Role+", "+who+")", l.Password)
	}
	if *duration > 0 {
		fmt.Fprintf(os.Stderr, "\nrunning for %s (Ctrl-C stops earlier)\n", *duration)
	} else {
		fmt.Fprintf(os.Stderr, "\nCtrl-C stops everything\n")
	}
	wait := ctx
	if *duration > 0 {
		var cancel context.CancelFunc
		wait, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	<-wait.Done()
	var sum demo.Summary
	if *headless {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		sum = d.Summary(sctx)
		cancel()
	}
	fmt.Fprintf(os.Stderr, "\nstopping\n")
	stopCtx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stopErr := d.Stop(stopCtx)
	if *headless {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return err
		}
	}
	if stopErr != nil {
		return fmt.Errorf("demo stop: %w", stopErr)
	}
	return nil
}
