package rollup

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// origin is where a cell's rows come from: its sensor and source country
// (indices in the bin's string table) and source ASN.
type origin struct{ sensor, country, asn uint32 }

// cellID is a cell's key packed into one word, so that the per-bin cell
// map takes the runtime's fast path for 8-byte keys: the index of the
// cell's origin in bin.origins in the upper half, then protocol<<24 |
// port<<4 | class (the port takes 17 bits for OtherPort).
type cellID uint64

func packCell(origin uint32, proto uint8, port uint32, class uint8) cellID {
	return cellID(uint64(origin)<<32 | uint64(proto)<<24 | uint64(port)<<4 | uint64(class))
}

func (id cellID) origin() uint32 { return uint32(id >> 32) }
func (id cellID) proto() uint8   { return uint8(id >> 24) }
func (id cellID) port() uint32   { return uint32(id>>4) & 0x1ffff }
func (id cellID) class() uint8   { return uint8(id & 0xf) }

// cell is one cell of a bin's cube, stored by value in bin.cells.
type cell struct {
	id      cellID
	Packets uint64
	Bytes   uint64
	fp      int32 // 1 + index in bin.fps of its fingerprint packets; 0 none
	Sources Sketch
}

// hostID is a host's key: its address in 16-byte form (IPv4 as
// IPv4-mapped, which Unmap undoes on the way out) and its sensor's index
// in the bin's string table.
type hostID struct{ a, b, sensor uint64 }

// v4Key is the key of an IPv4 host in bin.host4, or false for IPv6.
func (id hostID) v4Key() (uint64, bool) {
	if id.a != 0 || id.b>>32 != 0xffff {
		return 0, false
	}
	return id.sensor<<32 | id.b&0xffffffff, true
}

// hash is hashAddr of the host's address.
func (id hostID) hash() uint64 { return mix64(id.a*0x9e3779b97f4a7c15 ^ id.b) }

func (id hostID) addr() netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], id.a)
	binary.BigEndian.PutUint64(b[8:], id.b)
	return netip.AddrFrom16(b).Unmap()
}

func hostIDOf(a netip.Addr, sensor uint32) hostID {
	b := a.As16()
	return hostID{a: binary.BigEndian.Uint64(b[:8]), b: binary.BigEndian.Uint64(b[8:]), sensor: uint64(sensor)}
}

// maxHostPorts is how many distinct ports a host record lists.
const maxHostPorts = 16

// host is one source host of a bin, stored by value in bin.hosts; it
// holds no pointer, so the garbage collector does not scan the hosts.
type host struct {
	id        hostID
	Packets   uint64
	Bytes     uint64
	FirstMs   int64
	LastMs    int64
	protocols [4]uint64 // bit p set: protocol p seen
	country   uint32    // index in the bin's string table
	ASN       uint32
	ClassMask uint16
	nPorts    uint8
	MorePorts bool
	ports     [maxHostPorts]uint32 // ports[:nPorts] sorted
}

func (h *host) hasProtocol(p uint8) bool { return h.protocols[p>>6]&(1<<(p&63)) != 0 }

func (h *host) addProtocol(p uint8) { h.protocols[p>>6] |= 1 << (p & 63) }

// Ports returns the listed ports, sorted.
func (h *host) Ports() []uint32 { return h.ports[:h.nPorts] }

// protocolList returns the protocols seen, sorted.
func (h *host) protocolList() []uint8 {
	var out []uint8
	for p := range 256 {
		if h.hasProtocol(uint8(p)) {
			out = append(out, uint8(p))
		}
	}
	return out
}

// addPort lists port, or sets MorePorts when the list is full.
func (h *host) addPort(port uint32) {
	ps := h.ports[:h.nPorts]
	i, found := slices.BinarySearch(ps, port)
	if found {
		return
	}
	if int(h.nPorts) >= maxHostPorts {
		h.MorePorts = true
		return
	}
	copy(h.ports[i+1:h.nPorts+1], h.ports[i:h.nPorts])
	h.ports[i] = port
	h.nPorts++
}

// bin is one rollup bin. Sensor ids and countries are interned into the
// bin's string table and (sensor, country, ASN) triples into its origin
// table, so that cells and hosts hold small indices and the per-row maps
// have 8-byte keys (IPv6 hosts aside). Cells and hosts live by value in
// slices indexed through those maps. Every index depends only on the
// order of the log, and none is written to snapshots.
type bin struct {
	Start     int64
	strs      []string          // the string table
	strIdx    map[string]uint32 // index of each string in strs
	origins   []origin
	originIdx map[uint32]map[uint64]uint32 // sensor -> country<<32|asn -> index in origins
	cellIdx   map[cellID]int32             // index in cells
	cells     []cell
	fps       []map[string]uint64 // fingerprint packets of cells with fp != 0
	Ordinary  int                 // cells counted against MaxCellsPerBin
	Total     Sketch
	host4     map[uint64]int32 // sensor<<32 | IPv4 address -> index in hosts
	host6     map[hostID]int32 // other addresses -> index in hosts
	hosts     []host
	// hostBits is a one-hash Bloom filter over the hosts' keys (bit
	// hostBit clear: no such host), at least 16 bits per host the bin may
	// hold: once the bin holds MaxHostsPerBin hosts most rows are of
	// hosts it does not hold, and the filter spares their map lookup.
	hostBits  []uint64
	hostShift uint8
	Sensors   map[string]*sensorBin
}

// newBin returns an empty bin. With like set, the bin's tables start at
// like's sizes (a bin's neighbour is a good guess of its size), so that
// filling it does not grow and rehash them step by step.
func newBin(start int64, maxHosts int, like *bin) *bin {
	var cells, hosts, hosts6, origins int
	if like != nil {
		cells, hosts, hosts6, origins = len(like.cells), len(like.hosts), len(like.host6), len(like.origins)
	}
	logBits := min(maxHostBitsLog, bits.Len(uint(max(64, 16*maxHosts)-1)))
	return &bin{Start: start, strIdx: map[string]uint32{}, originIdx: map[uint32]map[uint64]uint32{},
		origins: make([]origin, 0, origins), cellIdx: make(map[cellID]int32, cells), cells: make([]cell, 0, cells),
		host4: make(map[uint64]int32, hosts-hosts6), host6: make(map[hostID]int32, hosts6), hosts: make([]host, 0, hosts),
		hostBits: make([]uint64, 1<<logBits/64), hostShift: uint8(64 - logBits),
		Sensors: map[string]*sensorBin{}}
}

// maxHostBitsLog caps a bin's host filter at 2^18 bits (32 KB): enough
// for 16 bits per host up to 16,384 hosts; beyond that it lets more rows
// through to the map.
const maxHostBitsLog = 18

// hostBit returns the filter word and bit of the host of sensor whose
// address hashes (hashAddr) to h.
func (bn *bin) hostBit(h uint64, sensor uint32) (int, uint64) {
	b := (h ^ uint64(sensor)*0x9e3779b97f4a7c15) >> bn.hostShift
	return int(b >> 6), 1 << (b & 63)
}

// intern returns the index of s in the bin's string table, adding it.
func (bn *bin) intern(s string) uint32 {
	if i, ok := bn.strIdx[s]; ok {
		return i
	}
	i := uint32(len(bn.strs))
	bn.strs = append(bn.strs, s)
	bn.strIdx[s] = i
	return i
}

// lookup returns the index of s in the string table, if it is there.
func (bn *bin) lookup(s string) (uint32, bool) {
	i, ok := bn.strIdx[s]
	return i, ok
}

// originsOf returns the origin index of one sensor.
func (bn *bin) originsOf(sensor uint32) map[uint64]uint32 {
	om := bn.originIdx[sensor]
	if om == nil {
		om = map[uint64]uint32{}
		bn.originIdx[sensor] = om
	}
	return om
}

// origin returns the index of (sensor, country, asn) in the origin table,
// adding it; om is originsOf(sensor).
func (bn *bin) origin(om map[uint64]uint32, sensor, country, asn uint32) uint32 {
	k := uint64(country)<<32 | uint64(asn)
	if i, ok := om[k]; ok {
		return i
	}
	i := uint32(len(bn.origins))
	bn.origins = append(bn.origins, origin{sensor: sensor, country: country, asn: asn})
	om[k] = i
	return i
}

// key returns a cell's key in readable form.
func (bn *bin) key(id cellID) cellKey {
	o := bn.origins[id.origin()]
	return cellKey{Sensor: bn.strs[o.sensor], Country: bn.strs[o.country], ASN: o.asn,
		Protocol: id.proto(), Port: id.port(), Class: id.class()}
}

// newCell adds an empty cell.
func (bn *bin) newCell(id cellID) int32 {
	i := int32(len(bn.cells))
	bn.cells = append(bn.cells, cell{id: id})
	bn.cellIdx[id] = i
	return i
}

// fingerprints returns the fingerprint packets of c (nil if none).
func (bn *bin) fingerprints(c *cell) map[string]uint64 {
	if c.fp == 0 {
		return nil
	}
	return bn.fps[c.fp-1]
}

// hostIndex returns the index of a host in hosts.
func (bn *bin) hostIndex(id hostID) (int32, bool) {
	if k, ok := id.v4Key(); ok {
		i, ok := bn.host4[k]
		return i, ok
	}
	i, ok := bn.host6[id]
	return i, ok
}

// addHost appends a host record.
func (bn *bin) addHost(h host) {
	i := int32(len(bn.hosts))
	bn.hosts = append(bn.hosts, h)
	if k, ok := h.id.v4Key(); ok {
		bn.host4[k] = i
	} else {
		bn.host6[h.id] = i
	}
	w, bit := bn.hostBit(h.id.hash(), uint32(h.id.sensor))
	bn.hostBits[w] |= bit
}

// sketchAdd is a distinct-source insertion deferred to the end of a batch:
// into the HLL register word when the cell's sketch is a HyperLogLog,
// else into the cell's exact set.
type sketchAdd struct {
	word *uint64
	hash uint64
	cell int32
}

func (m *Module) addRows(bn *bin, sid string, b *jasperv1.Batch, en *jasperv1.Enrichment) {
	r := b.GetRows()
	if r == nil {
		return
	}
	binMs := b.GetBinStart() * 1000
	src := r.GetSrcIp()
	protos, classes, dports, overflow := r.GetProtocol(), r.GetClass(), r.GetDstPort(), r.GetOverflow()
	packets, bytes, firsts, lasts := r.GetPackets(), r.GetBytes(), r.GetFirstSeenMs(), r.GetLastSeenMs()
	fps := r.GetFingerprints()
	countries, asns := en.GetSrcCountry(), en.GetSrcAsn()
	sensor := bn.intern(sid)
	om := bn.originsOf(sensor)
	// Rows of one source come together and share their enrichment: the
	// origin is looked up only when the country or ASN changes.
	var (
		haveOrigin, orgOK       bool
		prevCountry             string
		prevASN, country, org   uint32
		haveFold                bool
		foldCountry, foldOrigin uint32
	)
	// The sources' sketch insertions wait for the end of the batch: done
	// in a tight loop of their own, the cache misses on the cells'
	// registers overlap instead of stalling each row.
	adds := m.adds[:0]
	m.stats.Rows += uint64(len(src))
	for i, raw := range src {
		var ha, hb uint64
		switch len(raw) {
		case 4:
			ha, hb = 0, 0xffff<<32|uint64(binary.BigEndian.Uint32(raw))
		case 16:
			ha, hb = binary.BigEndian.Uint64(raw[:8]), binary.BigEndian.Uint64(raw[8:])
		default:
			m.stats.BadRows++
			continue
		}
		proto := col(protos, i)
		class := col(classes, i)
		if proto > 255 || class < 0 || int(class) >= numClasses {
			m.stats.BadRows++
			continue
		}
		port := uint32(0)
		if proto == 6 || proto == 17 {
			port = col(dports, i)
			if port > 65535 || col(overflow, i) {
				port = OtherPort
			}
		}
		c, asn := col(countries, i), col(asns, i)
		if !haveOrigin || c != prevCountry || asn != prevASN {
			if !haveOrigin || c != prevCountry {
				country = bn.intern(c)
			}
			// Only looked up: an origin enters the table with its first
			// cell, so the table stays within the bin's cells.
			org, orgOK = om[uint64(country)<<32|uint64(asn)]
			haveOrigin, prevCountry, prevASN = true, c, asn
		}
		var ci int32
		ok := false
		if orgOK {
			ci, ok = bn.cellIdx[packCell(org, uint8(proto), port, uint8(class))]
		}
		if !ok {
			if bn.Ordinary >= m.cfg.MaxCellsPerBin {
				// Fold into the "other ports" cell of the sensor, country,
				// protocol and class (ASN 0).
				m.stats.FoldedRows++
				if !haveFold || foldCountry != country {
					foldOrigin = bn.origin(om, sensor, country, 0)
					haveFold, foldCountry = true, country
				}
				if asn == 0 {
					org, orgOK = foldOrigin, true // the row's own origin now exists
				}
				id := packCell(foldOrigin, uint8(proto), OtherPort, uint8(class))
				if ci, ok = bn.cellIdx[id]; !ok {
					ci = bn.newCell(id)
				}
			} else {
				if !orgOK {
					org, orgOK = bn.origin(om, sensor, country, asn), true
				}
				ci = bn.newCell(packCell(org, uint8(proto), port, uint8(class)))
				if port != OtherPort || asn != 0 {
					bn.Ordinary++
				}
			}
		}
		cl := &bn.cells[ci]
		pk, by := col(packets, i), col(bytes, i)
		cl.Packets += pk
		cl.Bytes += by
		h := hostID{a: ha, b: hb}.hash() // hashAddr of the address
		if cl.Sources.hll {
			// The register's word, found now that the cell is in cache.
			adds = append(adds, sketchAdd{word: cl.Sources.regWord(h), hash: h})
		} else {
			adds = append(adds, sketchAdd{cell: ci, hash: h})
		}
		bn.Total.Add(h)
		for _, fc := range fps {
			if n := col(fc.GetPackets(), i); n > 0 && fc.GetName() != "" {
				if cl.fp == 0 {
					bn.fps = append(bn.fps, map[string]uint64{})
					cl.fp = int32(len(bn.fps))
				}
				bn.fps[cl.fp-1][fc.GetName()] += n
			}
		}

		hk := hostID{a: ha, b: hb, sensor: uint64(sensor)}
		var hi int32
		ok = false
		if w, bit := bn.hostBit(h, sensor); bn.hostBits[w]&bit != 0 {
			hi, ok = bn.hostIndex(hk)
		}
		if !ok {
			if len(bn.hosts) >= m.cfg.MaxHostsPerBin {
				m.stats.DroppedHosts++
				continue
			}
			first := binMs + int64(col(firsts, i))
			hi = int32(len(bn.hosts))
			bn.addHost(host{id: hk, country: country, ASN: asn, FirstMs: first, LastMs: first})
		}
		hs := &bn.hosts[hi]
		hs.Packets += pk
		hs.Bytes += by
		hs.ClassMask |= 1 << uint(class)
		hs.addProtocol(uint8(proto))
		if proto == 6 || proto == 17 {
			if port == OtherPort {
				hs.MorePorts = true
			} else {
				hs.addPort(port)
			}
		}
		hs.FirstMs = min(hs.FirstMs, binMs+int64(col(firsts, i)))
		hs.LastMs = max(hs.LastMs, binMs+int64(col(lasts, i)))
	}
	for _, a := range adds {
		if a.word != nil {
			addHLLWord(a.word, a.hash)
		} else {
			bn.cells[a.cell].Sources.Add(a.hash)
		}
	}
	clear(adds) // no pointers kept into the registers
	m.adds = adds[:0]
}
