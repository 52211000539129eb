package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/hub/chstore"
)

func init() {
	hubExtensions = append(hubExtensions, hub.Extension{Name: "clickhouse", Attach: attachClickHouse})
	// `hub run --check` validates the top-level sections but runs no
	// extension; check the clickhouse section there too, so that a bad key
	// or value is named before the hub is started.
	run, ok := hubCommands["run"]
	if !ok || run.run == nil {
		panic("hub_clickhouse.go: hub run is not registered (hub.go's init must run first)")
	}
	next := run.run
	run.run = func(ctx context.Context, args []string) error {
		if err := checkClickHouseFlags(args); err != nil {
			return err
		}
		return next(ctx, args)
	}
	hubCommands["run"] = run
}

// clickHouseSection decodes the hub's `clickhouse:` section strictly over
// chstore's defaults and validates it. ok is false when the section is
// absent. The dashboards extension reads the same section the same way.
func clickHouseSection(cfg hub.Config) (c chstore.Config, ok bool, err error) {
	c = chstore.DefaultConfig()
	if !cfg.HasSection("clickhouse") {
		return c, false, nil
	}
	if err := cfg.Section("clickhouse", &c); err != nil {
		return c, true, err
	}
	if err := c.Validate(); err != nil {
		return c, true, err
	}
	return c, true, nil
}

// checkClickHouseFlags runs for `hub run`: with --check and a config file
// it validates the clickhouse section (the rest of --check is hubRun's).
// Flag errors are left to hubRun.
func checkClickHouseFlags(args []string) error {
	fs := flag.NewFlagSet("jasper hub run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", "", "")
	check := fs.Bool("check", false, "")
	if fs.Parse(args) != nil || !*check || *path == "" {
		return nil
	}
	cfg, err := hub.LoadConfig(*path)
	if err != nil {
		return nil // hubRun reports it
	}
	if _, _, err := clickHouseSection(cfg); err != nil {
		return fmt.Errorf("config %s: %w", *path, err)
	}
	return nil
}

// attachClickHouse wires the ClickHouse loader into a hub that has a
// `clickhouse:` section: the store keeps committed batches in its
// pending-load queue (ingest throttles sensors when it is full), and the
// loader runs as a service on every hub, acting only while its hub leads.
// The loader finds new batches by polling (clickhouse.poll_interval; it
// loops without waiting while batches are pending): the store has no
// commit hook to call Loader.Notify from. Without the section the hub keeps
// only its embedded state and no queue.
func attachClickHouse(h *hub.Hub) error {
	chc, ok, err := clickHouseSection(h.Config())
	if err != nil {
		return err
	}
	if !ok {
		h.Log().Info("clickhouse_disabled", "reason", "no clickhouse section: embedded state only")
		return nil
	}
	conn, err := chstore.Open(chc)
	if err != nil {
		return err
	}
	ld, err := chstore.NewLoader(chc, h.Store(), conn, h.Registerer(), h.Log())
	if err != nil {
		conn.Close()
		return err
	}
	if err := h.EnableLoader(); err != nil {
		conn.Close()
		return fmt.Errorf("clickhouse: %w", err)
	}
	h.AddService(&loaderService{ld: ld, conn: conn})
	h.Log().Info("clickhouse_loader_attached", "addr", chc.Addr, "database", chc.Database,
		"max_pending_rows", h.Config().MaxPendingRows)
	return nil
}

// loaderService runs a chstore.Loader as a hub service and closes its
// connection pool when stopped.
type loaderService struct {
	ld    *chstore.Loader
	conn  driver.Conn
	close sync.Once
}

func (s *loaderService) Start(ctx context.Context) error { return s.ld.Start(ctx) }

// Stop stops the loader (idempotent) and closes the connection pool.
func (s *loaderService) Stop(ctx context.Context) error {
	err := s.ld.Stop(ctx)
	s.close.Do(func() {
		if cerr := s.conn.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close clickhouse: %w", cerr))
		}
	})
	return err
}
