package store

import (
	"errors"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Every hub decodes every batches entry, and the decode (proto.Unmarshal)
// was the largest cost of the apply path outside the modules: each source
// address of a batch became its own allocation appended one by one to a
// growing slice, and each country code its own string. batchesDecoder
// decodes the canonical form the proposer writes (known fields, packed
// repeated scalars, each message field once) with the row columns sized
// up front, the addresses of a batch in one buffer, and short strings
// (sensor ids, country codes, fingerprint names) interned. Anything else
// (unknown fields, unpacked repeated scalars, a message field given twice,
// malformed input) goes to proto.Unmarshal, which stays the reference:
// FuzzDecodeBatches checks that both give equal messages.

// errSlowPath sends a payload to proto.Unmarshal.
var errSlowPath = errors.New("store: batches payload is not in canonical form")

// maxInterned bounds the interned strings of one FSM.
const maxInterned = 4096

type batchesDecoder struct {
	// noIntern: strings are allocated, not interned (a decoder used once).
	noIntern bool
	strs     map[string]string
	// short is a direct-mapped cache in front of strs for one- and
	// two-byte strings (country codes, one per row of a batch).
	short [256]string
}

// decodeBatches decodes a BatchesCommand payload: on the fast path when
// it can, else with proto.Unmarshal.
func (d *batchesDecoder) decodeBatches(b []byte) (*jasperv1.BatchesCommand, error) {
	if c, err := d.batches(b); err == nil {
		return c, nil
	}
	var c jasperv1.BatchesCommand
	if err := proto.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// DecodeBatch decodes an encoded jasperv1.Batch (a sensor's, from the
// wire) as proto.Unmarshal does, on the fast path of the FSM's decoder
// when the bytes are in canonical form: the row columns sized up front and
// the source addresses in one buffer. It is safe for concurrent use.
func DecodeBatch(b []byte) (*jasperv1.Batch, error) {
	d := batchesDecoder{noIntern: true}
	if bt, err := d.batch(b); err == nil {
		return bt, nil
	}
	var bt jasperv1.Batch
	if err := proto.Unmarshal(b, &bt); err != nil {
		return nil, err
	}
	return &bt, nil
}

// field is one decoded tag and value: v for varints, b for
// length-delimited values (aliasing the input).
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64
	b   []byte
}

// nextField decodes the field at the start of b. Only varint and
// length-delimited fields occur in these messages; anything else fails.
func nextField(b []byte) (field, []byte, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num > protowire.MaxValidNumber {
		return field{}, nil, errSlowPath
	}
	b = b[n:]
	f := field{num: num, typ: typ}
	switch typ {
	case protowire.VarintType:
		f.v, n = protowire.ConsumeVarint(b)
	case protowire.BytesType:
		f.b, n = protowire.ConsumeBytes(b)
	default:
		return field{}, nil, errSlowPath
	}
	if n < 0 {
		return field{}, nil, errSlowPath
	}
	return f, b[n:], nil
}

func (f field) is(num protowire.Number, typ protowire.Type) bool {
	return f.num == num && f.typ == typ
}

// str returns b as a string, interned when short; invalid UTF-8 (which
// proto.Unmarshal refuses in a proto3 string) fails.
func (d *batchesDecoder) str(b []byte) (string, error) {
	if d.noIntern {
		if !utf8.Valid(b) {
			return "", errSlowPath
		}
		return string(b), nil
	}
	var slot *string
	switch len(b) {
	case 0:
		return "", nil
	case 1, 2:
		slot = &d.short[(uint(b[0])*31+uint(b[len(b)-1]))&255]
		if *slot == string(b) {
			return *slot, nil
		}
	}
	if s, ok := d.strs[string(b)]; ok {
		if slot != nil {
			*slot = s
		}
		return s, nil
	}
	if !utf8.Valid(b) {
		return "", errSlowPath
	}
	s := string(b)
	if len(b) <= 64 && len(d.strs) < maxInterned {
		if d.strs == nil {
			d.strs = map[string]string{}
		}
		d.strs[s] = s
	}
	if slot != nil {
		*slot = s
	}
	return s, nil
}

// countVarints counts the varints of a packed field.
func countVarints(b []byte) int {
	n := 0
	for _, c := range b {
		if c < 0x80 {
			n++
		}
	}
	return n
}

// packed appends the varints of a packed field, converted to T as
// protobuf-go converts them (truncating to 32 bits for 32-bit types). The
// column is sized by counting the varints' last bytes first; one-byte
// varints (most values) skip the general decoder.
func packed[T ~uint32 | ~uint64 | ~int32 | ~int64](dst []T, b []byte) ([]T, error) {
	n := countVarints(b)
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	out := dst[start:]
	j := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c < 0x80 {
			if j >= len(out) {
				return nil, errSlowPath
			}
			out[j] = T(c)
			i++
			j++
			continue
		}
		if i+1 < len(b) && b[i+1] < 0x80 {
			if j >= len(out) {
				return nil, errSlowPath
			}
			out[j] = T(uint64(c&0x7f) | uint64(b[i+1])<<7)
			i += 2
			j++
			continue
		}
		v, k := protowire.ConsumeVarint(b[i:])
		if k < 0 || j >= len(out) {
			return nil, errSlowPath
		}
		out[j] = T(v)
		i += k
		j++
	}
	if j != n {
		// A varint of more than 10 bytes (ConsumeVarint refuses it) or a
		// truncated one: let proto.Unmarshal say what is wrong.
		return nil, errSlowPath
	}
	return dst, nil
}

func packedBool(dst []bool, b []byte) ([]bool, error) {
	dst = slices.Grow(dst, countVarints(b))
	for len(b) > 0 {
		if c := b[0]; c < 0x80 {
			dst = append(dst, c != 0)
			b = b[1:]
			continue
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return nil, errSlowPath
		}
		dst = append(dst, v != 0)
		b = b[n:]
	}
	return dst, nil
}

// shortBytes decodes a length-delimited field 1 with a one-byte tag and
// length (a source address, a country code) at the start of b; ok false
// sends the caller to nextField.
func shortBytes(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 2 || b[0] != 0x0a || b[1] >= 0x80 || len(b) < 2+int(b[1]) {
		return nil, nil, false
	}
	n := 2 + int(b[1])
	return b[2:n], b[n:], true
}

func (d *batchesDecoder) batches(b []byte) (*jasperv1.BatchesCommand, error) {
	c := &jasperv1.BatchesCommand{}
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return nil, err
		}
		b = rest
		switch {
		case f.is(1, protowire.BytesType):
			pb, err := d.proposed(f.b)
			if err != nil {
				return nil, err
			}
			c.Batches = append(c.Batches, pb)
		case f.is(2, protowire.VarintType):
			c.Load = f.v != 0
		default:
			return nil, errSlowPath
		}
	}
	return c, nil
}

func (d *batchesDecoder) proposed(b []byte) (*jasperv1.ProposedBatch, error) {
	pb := &jasperv1.ProposedBatch{}
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return nil, err
		}
		b = rest
		switch {
		case f.is(1, protowire.BytesType) && pb.Batch == nil:
			if pb.Batch, err = d.committed(f.b); err != nil {
				return nil, err
			}
		case f.is(2, protowire.VarintType):
			pb.RequireWatermark = f.v
		default:
			return nil, errSlowPath
		}
	}
	return pb, nil
}

func (d *batchesDecoder) committed(b []byte) (*jasperv1.CommittedBatch, error) {
	cb := &jasperv1.CommittedBatch{}
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return nil, err
		}
		b = rest
		switch {
		case f.is(1, protowire.VarintType):
			cb.RaftIndex = f.v
		case f.is(2, protowire.BytesType):
			cb.SensorId, err = d.str(f.b)
		case f.is(3, protowire.BytesType):
			cb.SensorCountry, err = d.str(f.b)
		case f.is(4, protowire.BytesType) && cb.Batch == nil:
			cb.Batch, err = d.batch(f.b)
		case f.is(5, protowire.BytesType) && cb.Enrichment == nil:
			cb.Enrichment, err = d.enrichment(f.b)
		case f.is(6, protowire.VarintType):
			cb.ReceivedAtMs = int64(f.v)
		default:
			return nil, errSlowPath
		}
		if err != nil {
			return nil, err
		}
	}
	return cb, nil
}

func (d *batchesDecoder) batch(b []byte) (*jasperv1.Batch, error) {
	bt := &jasperv1.Batch{}
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return nil, err
		}
		b = rest
		switch {
		case f.is(1, protowire.VarintType):
			bt.Sequence = f.v
		case f.is(2, protowire.VarintType):
			bt.BinStart = int64(f.v)
		case f.is(3, protowire.VarintType):
			bt.BinSeconds = uint32(f.v)
		case f.is(4, protowire.VarintType):
			bt.Partial = f.v != 0
		case f.is(5, protowire.BytesType) && bt.Stats == nil:
			bt.Stats, err = stats(f.b)
		case f.is(6, protowire.BytesType) && bt.Rows == nil:
			bt.Rows, err = d.rows(f.b)
		case f.is(7, protowire.VarintType):
			bt.SealedAtMs = int64(f.v)
		default:
			return nil, errSlowPath
		}
		if err != nil {
			return nil, err
		}
	}
	return bt, nil
}

func stats(b []byte) (*jasperv1.SensorStats, error) {
	s := &jasperv1.SensorStats{}
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return nil, err
		}
		b = rest
		if f.typ != protowire.VarintType {
			return nil, errSlowPath
		}
		switch f.num {
		case 1:
			s.PacketsSeen = f.v
		case 2:
			s.OutsideDarknet = f.v
		case 3:
			s.KernelDrops = f.v
		case 4:
			s.DecodeErrors = f.v
		case 5:
			s.Fragments = f.v
		case 6:
			s.NonIp = f.v
		case 7:
			s.OverflowRows = f.v
		case 8:
			s.ShedBatches = f.v
		case 9:
			s.ShedRows = f.v
		case 10:
			s.PacketsSummarised = f.v
		default:
			return nil, errSlowPath
		}
	}
	return s, nil
}

func (d *batchesDecoder) rows(b []byte) (*jasperv1.Rows, error) {
	// Size the address column and its one buffer first.
	nIP, ipBytes := 0, 0
	for rest := b; len(rest) > 0; {
		if ip, r, ok := shortBytes(rest); ok {
			nIP++
			ipBytes += len(ip)
			rest = r
			continue
		}
		f, r, err := nextField(rest)
		if err != nil {
			return nil, err
		}
		if f.is(1, protowire.BytesType) {
			nIP++
			ipBytes += len(f.b)
		}
		rest = r
	}
	r := &jasperv1.Rows{}
	var ipBuf []byte
	if nIP > 0 {
		r.SrcIp = make([][]byte, 0, nIP)
		ipBuf = make([]byte, 0, ipBytes)
	}
	for len(b) > 0 {
		if ip, rest, ok := shortBytes(b); ok {
			start := len(ipBuf)
			ipBuf = append(ipBuf, ip...)
			r.SrcIp = append(r.SrcIp, ipBuf[start:len(ipBuf):len(ipBuf)])
			b = rest
			continue
		}
		f, rest, err := nextField(b)
		if err != nil {
			return nil, err
		}
		b = rest
		if f.num != 1 && f.num != 16 && f.typ != protowire.BytesType {
			return nil, errSlowPath // an unpacked repeated scalar
		}
		switch f.num {
		case 1:
			if f.typ != protowire.BytesType {
				return nil, errSlowPath
			}
			start := len(ipBuf)
			ipBuf = append(ipBuf, f.b...)
			r.SrcIp = append(r.SrcIp, ipBuf[start:len(ipBuf):len(ipBuf)])
		case 2:
			r.Protocol, err = packed(r.Protocol, f.b)
		case 3:
			r.DstPort, err = packed(r.DstPort, f.b)
		case 4:
			r.IcmpType, err = packed(r.IcmpType, f.b)
		case 5:
			r.IcmpCode, err = packed(r.IcmpCode, f.b)
		case 6:
			r.Class, err = packed(r.Class, f.b)
		case 7:
			r.Packets, err = packed(r.Packets, f.b)
		case 8:
			r.Bytes, err = packed(r.Bytes, f.b)
		case 9:
			r.DstIps, err = packed(r.DstIps, f.b)
		case 10:
			r.FirstSeenMs, err = packed(r.FirstSeenMs, f.b)
		case 11:
			r.LastSeenMs, err = packed(r.LastSeenMs, f.b)
		case 12:
			r.TtlMin, err = packed(r.TtlMin, f.b)
		case 13:
			r.TtlMax, err = packed(r.TtlMax, f.b)
		case 14:
			r.DistinctPorts, err = packed(r.DistinctPorts, f.b)
		case 15:
			r.Overflow, err = packedBool(r.Overflow, f.b)
		case 16:
			if f.typ != protowire.BytesType {
				return nil, errSlowPath
			}
			var fp *jasperv1.FingerprintColumn
			if fp, err = d.fingerprint(f.b); err == nil {
				r.Fingerprints = append(r.Fingerprints, fp)
			}
		case 17:
			r.Fragments, err = packed(r.Fragments, f.b)
		default:
			return nil, errSlowPath
		}
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (d *batchesDecoder) fingerprint(b []byte) (*jasperv1.FingerprintColumn, error) {
	fp := &jasperv1.FingerprintColumn{}
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return nil, err
		}
		b = rest
		switch {
		case f.is(1, protowire.BytesType):
			fp.Name, err = d.str(f.b)
		case f.is(2, protowire.BytesType):
			fp.Packets, err = packed(fp.Packets, f.b)
		default:
			return nil, errSlowPath
		}
		if err != nil {
			return nil, err
		}
	}
	return fp, nil
}

func (d *batchesDecoder) enrichment(b []byte) (*jasperv1.Enrichment, error) {
	n := 0
	for rest := b; len(rest) > 0; {
		if _, r, ok := shortBytes(rest); ok {
			n++
			rest = r
			continue
		}
		f, r, err := nextField(rest)
		if err != nil {
			return nil, err
		}
		if f.is(1, protowire.BytesType) {
			n++
		}
		rest = r
	}
	e := &jasperv1.Enrichment{}
	if n > 0 {
		e.SrcCountry = make([]string, 0, n)
	}
	for len(b) > 0 {
		if v, rest, ok := shortBytes(b); ok {
			s, err := d.str(v)
			if err != nil {
				return nil, err
			}
			e.SrcCountry = append(e.SrcCountry, s)
			b = rest
			continue
		}
		f, rest, err := nextField(b)
		if err != nil {
			return nil, err
		}
		b = rest
		switch {
		case f.is(1, protowire.BytesType):
			var s string
			if s, err = d.str(f.b); err == nil {
				e.SrcCountry = append(e.SrcCountry, s)
			}
		case f.is(2, protowire.BytesType):
			e.SrcAsn, err = packed(e.SrcAsn, f.b)
		case f.is(3, protowire.BytesType):
			e.SrcLabel, err = packed(e.SrcLabel, f.b)
		case f.is(4, protowire.BytesType):
			e.GeoDbVersion, err = d.str(f.b)
		default:
			return nil, errSlowPath
		}
		if err != nil {
			return nil, err
		}
	}
	return e, nil
}
