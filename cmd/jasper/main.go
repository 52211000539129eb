// Command jasper is the one binary of the jasper darknet federation. Each
// role is a subcommand: `jasper sensor ...`, `jasper hub ...`, `jasper ca ...`,
// `jasper eval`, `jasper demo`. Each subcommand lives in its own file and
// registers itself in init.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]command{}

func register(name, summary string, run func(ctx context.Context, args []string) error) {
	if _, dup := commands[name]; dup {
		panic("duplicate command " + name)
	}
	commands[name] = command{summary: summary, run: run}
}

func usage() {
	fmt.Fprintf(os.Stderr, "jasper %s: darknet sensor federation and early warning\n\nUsage: jasper COMMAND [ARGS]\n\nCommands:\n", version)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, "  %-10s %s\n", "version", "print the version")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	if os.Args[1] == "version" || os.Args[1] == "--version" {
		fmt.Println(version)
		return
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "jasper: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cmd.run(ctx, os.Args[2:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "jasper %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// subcommands dispatches the second word of a command line ("jasper sensor
// run ...") to one of subs.
func subcommands(ctx context.Context, group string, args []string, subs map[string]command) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(os.Stderr, "Usage: jasper %s SUBCOMMAND [ARGS]\n\n", group)
		names := make([]string, 0, len(subs))
		for n := range subs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, subs[n].summary)
		}
		return fmt.Errorf("missing subcommand")
	}
	s, ok := subs[args[0]]
	if !ok {
		return fmt.Errorf("unknown subcommand %q of %s", args[0], group)
	}
	return s.run(ctx, args[1:])
}
