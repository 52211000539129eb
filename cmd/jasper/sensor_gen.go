package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"

	"github.com/jasperfed/jasper/sensor/synth"
)

func init() {
	sensorCommands["gen"] = command{
		summary: "write a synthetic darknet capture (fixed seed, deterministic)",
		run:     runSensorGen,
	}
}

func runSensorGen(ctx context.Context, args []string) error {
	def := synth.DefaultConfig()
	fs := flag.NewFlagSet("jasper sensor gen", flag.ContinueOnError)
	out := fs.String("out", "", "pcap file to write")
	packets := fs.Int("packets", def.Packets, "number of packets")
	seed := fs.Uint64("seed", def.Seed, "seed of the pseudo-random generator")
	sources := fs.Int("sources", def.Sources, "distinct scanning sources to draw from")
	darknet := fs.String("darknet", def.Darknet.String(), "IPv4 darknet prefix the packets are sent to")
	rate := fs.Float64("rate", def.Rate, "packets per second of capture time")
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		return errors.New("flag --out: an output file is required")
	}
	cfg := def
	cfg.Packets, cfg.Seed, cfg.Sources, cfg.Rate = *packets, *seed, *sources, *rate
	p, err := netip.ParsePrefix(*darknet)
	if err != nil {
		return fmt.Errorf("flag --darknet: %w", err)
	}
	cfg.Darknet = p
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("flag --%w", err)
	}
	g, err := synth.New(cfg)
	if err != nil {
		return err
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if _, err := g.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", *out, err)
	}
	return f.Close()
}
