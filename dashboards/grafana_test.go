package dashboards

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jasperfed/jasper/hub/chstore"
	"github.com/jasperfed/jasper/hub/chstore/chstoretest"
)

type grafanaDashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Title      string `json:"title"`
		Datasource struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Query      string `json:"query"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
}

const grafanaPlugin = "vertamedia-clickhouse-datasource"

func loadGrafana(t *testing.T) map[string]grafanaDashboard {
	t.Helper()
	files, err := filepath.Glob("grafana/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no grafana dashboards: %v", err)
	}
	out := map[string]grafanaDashboard{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d grafanaDashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[f] = d
	}
	return out
}

// schemaColumns reads table columns from hub/chstore/SCHEMA.md, the
// documented schema the dashboards are written against.
func schemaColumns(t *testing.T) map[string]map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "hub", "chstore", "SCHEMA.md"))
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string]map[string]bool{}
	var cur map[string]bool
	colRE := regexp.MustCompile(`^\s+([a-z_][a-z0-9_]*) [A-Z]`)
	for _, line := range strings.Split(string(b), "\n") {
		if m := regexp.MustCompile(`^CREATE TABLE ([a-z_]+) \(`).FindStringSubmatch(line); m != nil {
			cur = map[string]bool{}
			tables[m[1]] = cur
			continue
		}
		if cur != nil {
			if strings.HasPrefix(line, ")") {
				cur = nil
				continue
			}
			if m := colRE.FindStringSubmatch(line); m != nil {
				cur[m[1]] = true
			}
		}
	}
	// SCHEMA.md: "summary_hour: same columns" as summary_minute.
	tables["summary_hour"] = tables["summary_minute"]
	for _, n := range []string{"summary", "summary_minute", "sensor_stats", "summary_asn_hour"} {
		if len(tables[n]) < 5 {
			t.Fatalf("could not read the columns of %s from SCHEMA.md: %v", n, tables[n])
		}
	}
	return tables
}

var (
	sqlKeywords = map[string]bool{}
	stringLitRE = regexp.MustCompile(`'[^']*'`)
	identRE2    = regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*`)
	aliasRE     = regexp.MustCompile(`(?i)\bAS\s+([A-Za-z_][A-Za-z0-9_]*)`)
	fromRE      = regexp.MustCompile(`(?i)\bFROM\s+\$database\.([a-z_]+)`)
)

func init() {
	for _, k := range strings.Fields(`select from where and or not in as group by order desc asc limit having
		between if null interval is like distinct`) {
		sqlKeywords[k] = true
	}
}

// expandMacros replaces the plugin's macros and the dashboard variables as
// Grafana would with empty filters.
func expandMacros(q, db string) string {
	q = regexp.MustCompile(`\$timeFilterByColumn\(([a-z_]+)\)`).ReplaceAllString(q,
		"$1 >= toDateTime(1700000000) AND $1 < toDateTime(1900000000)")
	q = strings.ReplaceAll(q, "$interval", "60")
	q = strings.ReplaceAll(q, "$database", db)
	for _, v := range []string{"$sensor", "$country", "$port"} {
		q = strings.ReplaceAll(q, v, "")
	}
	return q
}

func TestGrafanaDashboards(t *testing.T) {
	schema := schemaColumns(t)
	queries := 0
	for file, d := range loadGrafana(t) {
		if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
			t.Errorf("%s: uid %q title %q panels %d", file, d.UID, d.Title, len(d.Panels))
		}
		hasDS := false
		for _, v := range d.Templating.List {
			if v.Name == "DS" && v.Type == "datasource" && v.Query == grafanaPlugin {
				hasDS = true
			}
		}
		if !hasDS {
			t.Errorf("%s: no datasource variable DS of type %s", file, grafanaPlugin)
		}
		for _, p := range d.Panels {
			if p.Datasource.UID != "${DS}" || p.Datasource.Type != grafanaPlugin {
				t.Errorf("%s panel %q: datasource %+v, want ${DS}", file, p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s panel %q: no query", file, p.Title)
			}
			for _, tg := range p.Targets {
				queries++
				if tg.Datasource.UID != "${DS}" {
					t.Errorf("%s panel %q: target datasource %q", file, p.Title, tg.Datasource.UID)
				}
				m := fromRE.FindAllStringSubmatch(tg.Query, -1)
				if len(m) != 1 {
					t.Errorf("%s panel %q: want one FROM $database.table, got %v", file, p.Title, m)
					continue
				}
				cols, ok := schema[m[0][1]]
				if !ok {
					t.Errorf("%s panel %q: table %s is not in SCHEMA.md", file, p.Title, m[0][1])
					continue
				}
				q := expandMacros(tg.Query, "db")
				q = stringLitRE.ReplaceAllString(q, "''")
				aliases := map[string]bool{}
				for _, a := range aliasRE.FindAllStringSubmatch(q, -1) {
					aliases[a[1]] = true
				}
				for _, loc := range identRE2.FindAllStringIndex(q, -1) {
					id := q[loc[0]:loc[1]]
					rest := strings.TrimLeft(q[loc[1]:], " ")
					switch {
					case strings.HasPrefix(rest, "("), // a function
						strings.HasPrefix(rest, "."), // the database
						sqlKeywords[strings.ToLower(id)], aliases[id], id == m[0][1]:
						continue
					}
					if !cols[id] {
						t.Errorf("%s panel %q: %q is not a column of %s", file, p.Title, id, m[0][1])
					}
				}
			}
		}
	}
	if queries < 10 {
		t.Errorf("only %d panel queries", queries)
	}
}

// TestGrafanaQueriesRunOnClickHouse runs every panel query, macros
// expanded, on a freshly migrated database.
func TestGrafanaQueriesRunOnClickHouse(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	ctx := context.Background()
	if _, err := chstore.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	for file, d := range loadGrafana(t) {
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				rows, err := conn.Query(ctx, expandMacros(tg.Query, db))
				if err != nil {
					t.Errorf("%s panel %q: %v", file, p.Title, err)
					continue
				}
				for rows.Next() {
				}
				rows.Close()
				if err := rows.Err(); err != nil {
					t.Errorf("%s panel %q: %v", file, p.Title, err)
				}
			}
		}
	}
}
