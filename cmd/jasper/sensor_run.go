package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/jasperfed/jasper/sensor"
)

func init() {
	sensorCommands["run"] = command{
		summary: "run the sensor: capture or replay, summarise, spool, stream to hubs (--check validates the config)",
		run:     sensorRun,
	}
}

func sensorRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("jasper sensor run", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "sensor configuration file (YAML)")
	check := fs.Bool("check", false, "validate the configuration (and that its TLS and replay files load), print the effective configuration and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return errors.New("--config FILE is required")
	}
	cfg, err := sensor.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *check {
		if err := cfg.CheckFiles(); err != nil {
			return fmt.Errorf("config %s: %w", *cfgPath, err)
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stdout, "# %s: valid; effective configuration:\n%s", *cfgPath, out)
		return nil
	}
	return sensor.Serve(ctx, cfg, version, os.Stderr)
}
