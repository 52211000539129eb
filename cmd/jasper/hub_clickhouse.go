package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/hub/chstore"
)

func init() {
	hubExtensions = append(hubExtensions, hub.Extension{Name: "clickhouse", Attach: attachClickHouse, Check: checkClickHouse})
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

// checkClickHouse validates the clickhouse section for `hub run --check`.
func checkClickHouse(cfg hub.Config) error {
	_, _, err := clickHouseSection(cfg)
	return err
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
