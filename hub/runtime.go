package hub

import (
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
)

// ApplyRuntime sets the Go garbage collector of this process from the
// runtime section: GC percent and soft memory limit. An environment
// variable (GOGC, GOMEMLIMIT) that is set wins over its key. It affects the
// whole process, so a program running one hub calls it once at start
// (`jasper hub run` does); tests running several hubs in one process do
// not.
func ApplyRuntime(c RuntimeConfig, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	gc := os.Getenv("GOGC")
	if gc == "" {
		debug.SetGCPercent(c.GCPercent)
		gc = strconv.Itoa(c.GCPercent)
	} else {
		gc = "GOGC=" + gc
	}
	limit := os.Getenv("GOMEMLIMIT")
	switch {
	case limit != "":
		limit = "GOMEMLIMIT=" + limit
	case c.MemoryLimitBytes > 0:
		debug.SetMemoryLimit(c.MemoryLimitBytes)
		limit = strconv.FormatInt(c.MemoryLimitBytes, 10)
	default:
		limit = "none"
	}
	log.Info("go_runtime", "gc_percent", gc, "memory_limit_bytes", limit)
}
