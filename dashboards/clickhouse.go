package dashboards

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/jasperfed/jasper/hub/rollup"
)

// ClickHouseSource answers from the ClickHouse tables of hub/chstore
// (SCHEMA.md there). Most questions read the dashboard rollups of schema
// versions 2 and 3, which keep few keys and uniqHLL12 source states: the
// overview and the class and fingerprint lists from summary_class_minute /
// summary_class_hour, or summary_sensor_class_minute for one sensor
// (without a country, protocol or port filter); the map and the country
// list from summary_country_hour, or summary_sensor_country_hour for one
// sensor (ranges of HourlyListsFrom or more, no protocol or port filter);
// the port lists from summary_port_hour (same ranges, no sensor or
// country filter); the sources of the ASN list from
// summary_asn_hour_by_asn. Every other question reads the finer rollups
// summary_minute / summary_hour / summary_asn_hour (sum() and uniqMerge()),
// host lists the raw summary table. The SQL runs on 18.16 and on current
// servers.
//
// In ClickHouse an overflow row has dst_port 0, so port 0 in its top lists
// also counts the ports that sensors folded ("other" in the embedded
// rollups).
type ClickHouseSource struct {
	conn driver.Conn
	db   string
	// sensors, when set, answers Sensors (the embedded rollups know when
	// each batch arrived, which ClickHouse does not record).
	sensors Source
}

// NewClickHouseSource queries database db over conn. sensors may be nil:
// sensor health then comes from the sensor_stats table.
func NewClickHouseSource(conn driver.Conn, db string, sensors Source) (*ClickHouseSource, error) {
	if conn == nil {
		return nil, fmt.Errorf("dashboards: clickhouse source needs a connection")
	}
	if !identRE.MatchString(db) {
		return nil, fmt.Errorf("dashboards: clickhouse database %q is not a plain identifier", db)
	}
	return &ClickHouseSource{conn: conn, db: db, sensors: sensors}, nil
}

// where builds the WHERE clause of the common filters for a table whose
// time column is tcol; hourly tables round the range out to whole hours.
func (s *ClickHouseSource) where(q Query, tcol string, hourly bool) (string, []any) {
	from, to := q.From.Unix(), q.To.Unix()
	if hourly {
		from -= mod64(from, 3600)
		to += (3600 - mod64(to, 3600)) % 3600
	}
	conds := []string{tcol + " >= toDateTime(?)", tcol + " < toDateTime(?)"}
	args := []any{uint32(from), uint32(to)}
	if q.Sensor != "" {
		conds = append(conds, "sensor_id = ?")
		args = append(args, q.Sensor)
	}
	if q.Country != "" {
		conds = append(conds, "src_country = ?")
		args = append(args, q.Country)
	}
	if q.Protocol != 0 {
		conds = append(conds, "protocol = ?")
		args = append(args, q.Protocol)
	}
	if q.HasPort {
		port := q.Port
		if port == rollup.OtherPort {
			port = 0
		}
		conds = append(conds, "dst_port = ?", "protocol IN (6, 17)")
		args = append(args, uint16(port))
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

func mod64(a, b int64) int64 { return ((a % b) + b) % b }

// rollupTable picks the hour table for a time series whose step is whole
// hours.
func (s *ClickHouseSource) rollupTable(q Query) (string, bool) {
	if q.Step >= time.Hour && q.Step%time.Hour == 0 {
		return s.db + ".summary_hour", true
	}
	return s.db + ".summary_minute", false
}

// listTable picks the table of a top list: the hour table for ranges of
// HourlyListsFrom or more (the range is then rounded out to whole hours),
// else the minute table.
func (s *ClickHouseSource) listTable(q Query) (string, bool) {
	if q.To.Sub(q.From) >= HourlyListsFrom {
		return s.db + ".summary_hour", true
	}
	return s.db + ".summary_minute", false
}

// HourlyListsFrom is the range from which top lists and the map read the
// hour rollup.
const HourlyListsFrom = 12 * time.Hour

// Overview implements Source.
func (s *ClickHouseSource) Overview(ctx context.Context, q Query) ([]Point, error) {
	step := int64(q.Step / time.Second)
	if step < 60 {
		step = 60
	}
	table, hourly := s.rollupTable(q)
	if step%3600 != 0 {
		table, hourly = s.db+".summary_minute", false
	}
	merge := "uniqMerge(sources)"
	if t, ok := s.classTable(q, hourly); ok {
		table, merge = t, "uniqHLL12Merge(sources)"
	}
	w, args := s.where(q, "t", hourly)
	bucket := fmt.Sprintf("toUInt32(intDiv(toUInt32(t), %d) * %d)", step, step)
	byStep := map[uint32]*Point{}
	get := func(ts uint32) *Point {
		p := byStep[ts]
		if p == nil {
			p = &Point{Start: time.Unix(int64(ts), 0).UTC(), Packets: map[string]uint64{}, Approx: true}
			byStep[ts] = p
		}
		return p
	}
	rows, err := s.conn.Query(ctx, "SELECT "+bucket+" AS ts, class, sum(packets) AS p, sum(bytes) AS b FROM "+table+w+
		" GROUP BY ts, class", args...)
	if err != nil {
		return nil, fmt.Errorf("clickhouse overview: %w", err)
	}
	for rows.Next() {
		var ts uint32
		var class string
		var p, b uint64
		if err := rows.Scan(&ts, &class, &p, &b); err != nil {
			rows.Close()
			return nil, fmt.Errorf("clickhouse overview: %w", err)
		}
		pt := get(ts)
		pt.Packets[class] += p
		pt.Bytes += b
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse overview: %w", err)
	}
	rows, err = s.conn.Query(ctx, "SELECT "+bucket+" AS ts, "+merge+" AS n FROM "+table+w+" GROUP BY ts", args...)
	if err != nil {
		return nil, fmt.Errorf("clickhouse overview sources: %w", err)
	}
	for rows.Next() {
		var ts uint32
		var n uint64
		if err := rows.Scan(&ts, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("clickhouse overview sources: %w", err)
		}
		get(ts).Sources = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse overview sources: %w", err)
	}
	keys := make([]uint32, 0, len(byStep))
	for k := range byStep {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]Point, len(keys))
	for i, k := range keys {
		out[i] = *byStep[k]
	}
	return out, nil
}

// classTable picks the class rollup that can answer q, if any: they have
// no country, protocol or port column; summary_sensor_class_minute
// answers for one sensor.
func (s *ClickHouseSource) classTable(q Query, hourly bool) (string, bool) {
	if q.Country != "" || q.Protocol != 0 || q.HasPort {
		return "", false
	}
	switch {
	case q.Sensor != "":
		return s.db + ".summary_sensor_class_minute", true
	case hourly:
		return s.db + ".summary_class_hour", true
	}
	return s.db + ".summary_class_minute", true
}

// Top implements Source. Lists are ranked by packets with plain sums, and
// the distinct sources (uniqMerge, the costly part) are computed only for
// the keys that made the list. Countries without a sensor, protocol or port
// filter come from summary_asn_hour, whose states are fewer.
func (s *ClickHouseSource) Top(ctx context.Context, q Query, d Dim) ([]Entry, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 1000
	}
	table, hourly := s.listTable(q)
	classTable, byClass := s.classTable(q, hourly)
	const hll = "uniqHLL12Merge(sources)"
	switch d {
	case DimFingerprint:
		if byClass {
			table = classTable
		}
		w, a := s.where(q, "t", hourly)
		sqlText := "SELECT name, p FROM (SELECT sum(fp_mirai) AS m, sum(fp_zmap) AS z, sum(fp_masscan) AS c FROM " + table + w +
			") ARRAY JOIN ['mirai', 'zmap', 'masscan'] AS name, [m, z, c] AS p WHERE p > 0 ORDER BY p DESC, name"
		rows, err := s.conn.Query(ctx, sqlText, a...)
		if err != nil {
			return nil, fmt.Errorf("clickhouse top fingerprints: %w", err)
		}
		defer rows.Close()
		var out []Entry
		for rows.Next() {
			var e Entry
			if err := rows.Scan(&e.Key, &e.Packets); err != nil {
				return nil, fmt.Errorf("clickhouse top fingerprints: %w", err)
			}
			out = append(out, e)
		}
		return out, rows.Err()
	case DimASN:
		if q.Sensor == "" && q.Protocol == 0 && !q.HasPort && hourly {
			// Ranked on the time-sorted table, sources of the listed
			// ASNs from the ASN-sorted copy.
			return s.topTables(ctx, q, d, "src_asn", s.db+".summary_asn_hour", s.db+".summary_asn_hour_by_asn", "t", true, "uniqMerge(sources)", limit)
		}
		return s.topTwoPhase(ctx, q, d, "src_asn", s.db+".summary", "bin_start", false, "uniq(src_ip)", limit)
	case DimCountry:
		if q.Protocol == 0 && !q.HasPort && hourly {
			if q.Sensor != "" {
				return s.topTwoPhase(ctx, q, d, "src_country", s.db+".summary_sensor_country_hour", "t", true, hll, limit)
			}
			return s.topTwoPhase(ctx, q, d, "src_country", s.db+".summary_country_hour", "t", true, hll, limit)
		}
		return s.topTwoPhase(ctx, q, d, "src_country", table, "t", hourly, "uniqMerge(sources)", limit)
	case DimPort:
		if q.Sensor == "" && q.Country == "" && hourly {
			return s.topTwoPhase(ctx, q, d, "dst_port", s.db+".summary_port_hour", "t", true, hll, limit)
		}
		return s.topTwoPhase(ctx, q, d, "dst_port", table, "t", hourly, "uniqMerge(sources)", limit)
	case DimClass:
		if byClass {
			return s.topTwoPhase(ctx, q, d, "class", classTable, "t", hourly, hll, limit)
		}
		return s.topTwoPhase(ctx, q, d, "class", table, "t", hourly, "uniqMerge(sources)", limit)
	case DimSensor:
		return s.topTwoPhase(ctx, q, d, "sensor_id", table, "t", hourly, "uniqMerge(sources)", limit)
	}
	return nil, fmt.Errorf("unknown dimension %q", d)
}

// sqlString quotes s as a ClickHouse string literal.
func sqlString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(s) + "'"
}

// topTwoPhase ranks col by packets, then counts distinct sources for the
// keys of the list only.
func (s *ClickHouseSource) topTwoPhase(ctx context.Context, q Query, d Dim, col, table, tcol string, hourly bool, distinct string, limit int) ([]Entry, error) {
	return s.topTables(ctx, q, d, col, table, table, tcol, hourly, distinct, limit)
}

// topTables is topTwoPhase ranking on table and counting the sources on
// sourcesTable (the same rows, sorted otherwise).
func (s *ClickHouseSource) topTables(ctx context.Context, q Query, d Dim, col, table, sourcesTable, tcol string, hourly bool, distinct string, limit int) ([]Entry, error) {
	w, args := s.where(q, tcol, hourly)
	if d == DimPort && q.Protocol == 0 {
		w += " AND protocol IN (6, 17)"
	}
	rows, err := s.conn.Query(ctx, "SELECT toString("+col+") AS k, sum(packets) AS p, sum(bytes) AS b FROM "+table+w+
		" GROUP BY k ORDER BY p DESC, k LIMIT "+strconv.Itoa(limit), args...)
	if err != nil {
		return nil, fmt.Errorf("clickhouse top %s: %w", d, err)
	}
	var out []Entry
	for rows.Next() {
		var e Entry
		if err := rows.Scan(&e.Key, &e.Packets, &e.Bytes); err != nil {
			rows.Close()
			return nil, fmt.Errorf("clickhouse top %s: %w", d, err)
		}
		out = append(out, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(out) == 0 {
		return out, err
	}
	// The keys are written out in the column's own type (numbers for the
	// numeric columns, checked to be numbers), so the filter is on the
	// column and the primary key can skip granules.
	numeric := col == "dst_port" || col == "src_asn"
	keys := make([]string, len(out))
	for i, e := range out {
		if numeric {
			if _, err := strconv.ParseUint(e.Key, 10, 32); err != nil {
				return nil, fmt.Errorf("clickhouse top %s: key %q is not a number", d, e.Key)
			}
			keys[i] = e.Key
		} else {
			keys[i] = sqlString(e.Key)
		}
	}
	rows, err = s.conn.Query(ctx, "SELECT toString("+col+") AS k, "+distinct+" AS n FROM "+sourcesTable+w+
		" AND "+col+" IN ("+strings.Join(keys, ", ")+") GROUP BY k", args...)
	if err != nil {
		return nil, fmt.Errorf("clickhouse top %s sources: %w", d, err)
	}
	defer rows.Close()
	idx := map[string]int{}
	for i, e := range out {
		idx[e.Key] = i
	}
	for rows.Next() {
		var k string
		var n uint64
		if err := rows.Scan(&k, &n); err != nil {
			return nil, fmt.Errorf("clickhouse top %s sources: %w", d, err)
		}
		if i, ok := idx[k]; ok {
			out[i].Sources = n
		}
	}
	return out, rows.Err()
}

// scopeSQL turns a scope into a condition on the raw table; the country
// codes are validated (two capital letters) before they are written out.
func scopeSQL(sc Scope) (string, error) {
	if sc.All {
		return "", nil
	}
	var or []string
	if len(sc.Countries) > 0 {
		var cs []string
		for _, c := range sc.Countries {
			if !countryRE.MatchString(c) {
				return "", fmt.Errorf("bad country %q in scope", c)
			}
			cs = append(cs, "'"+c+"'")
		}
		or = append(or, "src_country IN ("+strings.Join(cs, ", ")+")")
	}
	for _, p := range sc.Prefixes {
		p = p.Masked()
		lo := p.Addr()
		hi := lastAddr(p)
		if lo.Is4() {
			or = append(or, fmt.Sprintf("(IPv4StringToNum(src_ip) BETWEEN %d AND %d AND position(src_ip, ':') = 0)",
				v4num(lo), v4num(hi)))
		} else {
			l, h := lo.As16(), hi.As16()
			or = append(or, fmt.Sprintf("(position(src_ip, ':') > 0 AND IPv6StringToNum(src_ip) BETWEEN toFixedString(unhex('%s'), 16) AND toFixedString(unhex('%s'), 16))",
				hex.EncodeToString(l[:]), hex.EncodeToString(h[:])))
		}
	}
	if len(or) == 0 {
		return " AND 0", nil
	}
	return " AND (" + strings.Join(or, " OR ") + ")", nil
}

func v4num(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// lastAddr is the highest address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Hosts implements Source, from the raw summary table.
func (s *ClickHouseSource) Hosts(ctx context.Context, q Query, scope Scope) ([]Host, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	sc, err := scopeSQL(scope)
	if err != nil {
		return nil, err
	}
	w, args := s.where(q, "bin_start", false)
	sqlText := "SELECT src_ip, any(src_country), any(src_asn), sum(packets) AS p, sum(bytes), groupUniqArray(class), " +
		"arraySlice(groupUniqArray(if(protocol IN (6, 17), toUInt32(dst_port), toUInt32(65536))), 1, 17), groupUniqArray(sensor_id), " +
		"min(first_seen), max(last_seen) FROM " + s.db + ".summary" + w + sc +
		" GROUP BY src_ip ORDER BY p DESC, src_ip LIMIT " + strconv.Itoa(limit)
	rows, err := s.conn.Query(ctx, sqlText, args...)
	if err != nil {
		return nil, fmt.Errorf("clickhouse hosts: %w", err)
	}
	defer rows.Close()
	var out []Host
	for rows.Next() {
		var h Host
		var ip string
		var ports []uint32
		if err := rows.Scan(&ip, &h.Country, &h.ASN, &h.Packets, &h.Bytes, &h.Classes, &ports, &h.Sensors,
			&h.FirstSeen, &h.LastSeen); err != nil {
			return nil, fmt.Errorf("clickhouse hosts: %w", err)
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			continue
		}
		h.Addr = a
		if !scope.Contains(a, h.Country) {
			continue
		}
		for _, p := range ports {
			if p == 65536 || p == 0 {
				h.MorePorts = h.MorePorts || p == 0
				continue
			}
			h.Ports = append(h.Ports, p)
		}
		if len(h.Ports) > 16 {
			h.Ports, h.MorePorts = h.Ports[:16], true
		}
		slices.Sort(h.Ports)
		slices.Sort(h.Classes)
		slices.Sort(h.Sensors)
		h.FirstSeen, h.LastSeen = h.FirstSeen.UTC(), h.LastSeen.UTC()
		out = append(out, h)
	}
	return out, rows.Err()
}

// Sensors implements Source: from the embedded rollups when given,
// otherwise from sensor_stats over the last day.
func (s *ClickHouseSource) Sensors(ctx context.Context) ([]SensorHealth, error) {
	if s.sensors != nil {
		return s.sensors.Sensors(ctx)
	}
	rows, err := s.conn.Query(ctx, "SELECT sensor_id, any(sensor_country), count(), max(seq), max(bin_start), "+
		"sum(packets_seen), sum(packets_summarised), sum(kernel_drops), sum(decode_errors), sum(overflow_rows), "+
		"sum(shed_batches), sum(shed_rows), sumIf(packets_seen, bin_start >= now() - 300) "+
		"FROM "+s.db+".sensor_stats WHERE bin_start >= now() - 86400 GROUP BY sensor_id ORDER BY sensor_id")
	if err != nil {
		return nil, fmt.Errorf("clickhouse sensors: %w", err)
	}
	defer rows.Close()
	var out []SensorHealth
	for rows.Next() {
		var h SensorHealth
		var recent uint64
		if err := rows.Scan(&h.ID, &h.Country, &h.Batches, &h.LastSequence, &h.LastBinStart, &h.PacketsSeen,
			&h.PacketsSummarised, &h.KernelDrops, &h.DecodeErrors, &h.OverflowRows, &h.ShedBatches, &h.ShedRows, &recent); err != nil {
			return nil, fmt.Errorf("clickhouse sensors: %w", err)
		}
		h.LastBinStart = h.LastBinStart.UTC()
		h.PacketRate = float64(recent) / 300
		out = append(out, h)
	}
	return out, rows.Err()
}
