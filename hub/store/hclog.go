package store

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger returns an hclog.Logger whose records end up in log: hclog
// writes JSON lines to a writer that re-emits them through slog.
func newHCLogger(log *slog.Logger, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      hclog.Info,
		Output:     &slogWriter{log: log},
		JSONFormat: true,
	})
}

type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(p, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			w.log.Info("raft_log", "line", string(line))
			continue
		}
		lvl := slog.LevelInfo
		switch strings.ToLower(asString(rec["@level"])) {
		case "trace", "debug":
			lvl = slog.LevelDebug
		case "warn":
			lvl = slog.LevelWarn
		case "error":
			lvl = slog.LevelError
		}
		if !w.log.Enabled(context.Background(), lvl) {
			continue
		}
		msg := asString(rec["@message"])
		attrs := make([]any, 0, 2*len(rec))
		for k, v := range rec {
			if strings.HasPrefix(k, "@") {
				if k == "@module" {
					attrs = append(attrs, "module", v)
				}
				continue
			}
			attrs = append(attrs, k, v)
		}
		// hclog messages are prose; keep them as an attribute under a
		// constant message.
		w.log.Log(context.Background(), lvl, "raft", append(attrs, "msg_text", msg)...)
	}
	return len(p), nil
}

func asString(v any) string {
	s, _ := v.(string)
	return s
}
