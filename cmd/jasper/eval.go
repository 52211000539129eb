package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jasperfed/jasper/hub/detect"
	"github.com/jasperfed/jasper/hub/detect/scenarios"
	"github.com/jasperfed/jasper/internal/config"
)

func init() {
	register("eval", "replay labelled scenarios through enrichment and the detectors; print delay, precision, recall", runEval)
}

func runEval(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	format := fs.String("format", "text", "output format: text or json (one object per detector and scenario)")
	dir := fs.String("scenario", "", "run the scenario in DIR (labels.yaml plus capture files per sensor) instead of the built-in ones")
	only := fs.String("only", "", "run only the built-in scenarios with these names (comma-separated)")
	cfgPath := fs.String("config", "", "detector configuration (YAML, the hub's detect section); default: the documented defaults")
	geo := fs.String("geo", "", "folder with country.mmdb and asn.mmdb from `jasper geo build` (optional)")
	earlyFlush := fs.Duration("early-flush", 2*time.Second, "simulated sensor early-flush interval (0: off)")
	commitDelay := fs.Duration("commit-delay", 250*time.Millisecond, "assumed delay from a sealed batch to its apply on the hub")
	list := fs.Bool("list", false, "list the built-in scenarios and exit")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("--format: %q is not text or json", *format)
	}
	opts := scenarios.DefaultOptions()
	if *cfgPath != "" {
		c := detect.DefaultConfig()
		if err := config.Load(*cfgPath, &c); err != nil {
			return err
		}
		if err := c.Validate(); err != nil {
			return fmt.Errorf("%s: %w", *cfgPath, err)
		}
		opts.Detect = c
	}
	opts.GeoDir = *geo
	opts.Sim.EarlyFlush, opts.Sim.CommitDelay = *earlyFlush, *commitDelay
	var scs []*scenarios.Scenario
	if *dir != "" {
		s, err := scenarios.LoadDir(*dir)
		if err != nil {
			return err
		}
		scs = append(scs, s)
	} else {
		all, err := scenarios.Builtin()
		if err != nil {
			return err
		}
		want := map[string]bool{}
		for _, n := range strings.Split(*only, ",") {
			if n != "" {
				want[n] = true
			}
		}
		for _, s := range all {
			if len(want) == 0 || want[s.Name] {
				scs = append(scs, s)
				delete(want, s.Name)
			}
		}
		for n := range want {
			return fmt.Errorf("--only: no built-in scenario %q", n)
		}
	}
	if *list {
		for _, s := range scs {
			fmt.Printf("%-12s %s\n", s.Name, strings.TrimSpace(s.Labels.Description))
		}
		return nil
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var all []scenarios.Result
	for _, s := range scs {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := time.Now()
		res, err := scenarios.Run(s, opts)
		if err != nil {
			return err
		}
		if *format == "text" {
			fmt.Fprintf(os.Stderr, "scenario %s: %s\n", s.Name, time.Since(t).Round(time.Millisecond))
		}
		all = append(all, res...)
	}
	if *format == "json" {
		enc := json.NewEncoder(os.Stdout)
		for _, r := range all {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	return printEvalTable(all)
}

func printEvalTable(rs []scenarios.Result) error {
	if len(rs) == 0 {
		return errors.New("no results")
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tDETECTOR\tLABELLED\tFINDINGS\tTP\tFP\tPRECISION\tRECALL\tDELAY_BINS\tDELAY_S\tLAT_P50_S\tLAT_P95_S")
	f := func(p *float64, prec int) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprintf("%.*f", prec, *p)
	}
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Scenario, r.Detector, r.Labelled, r.Findings,
			r.TruePositives, r.FalsePositives, f(r.Precision, 3), f(r.Recall, 3), f(r.DelayBins, 1), f(r.DelaySeconds, 1),
			f(r.LatencyP50Seconds, 2), f(r.LatencyP95Seconds, 2))
	}
	return tw.Flush()
}
