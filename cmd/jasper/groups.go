package main

import "context"

// Subcommand tables of the command groups. Each file adds its subcommands
// to a table in its own init; the tables are read only at run time.
var (
	sensorCommands = map[string]command{}
	hubCommands    = map[string]command{}
	caCommands     = map[string]command{}
)

func init() {
	register("sensor", "run a darknet sensor, or summarise a capture", func(ctx context.Context, args []string) error {
		return subcommands(ctx, "sensor", args, sensorCommands)
	})
	register("hub", "run a regional hub, or administer a hub cluster", func(ctx context.Context, args []string) error {
		return subcommands(ctx, "hub", args, hubCommands)
	})
	register("ca", "manage the federation certificate authority", func(ctx context.Context, args []string) error {
		return subcommands(ctx, "ca", args, caCommands)
	})
}
