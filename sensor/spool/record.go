package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// On-disk format.
//
// A segment file starts with the 8-byte magic "JSPSEG1\n" and holds records
// back to back:
//
//	u32 LE  body length
//	u32 LE  CRC32C (Castagnoli) of the body
//	body:   u64 LE sequence | u64 LE cursor | u32 LE rows | protobuf Batch
//
// A record is good only when its whole body is present and its checksum
// matches; the first record that is not ends the good part of the segment.
const (
	segMagic      = "JSPSEG1\n"
	recHeaderLen  = 8
	recFixedBody  = 8 + 8 + 4
	maxRecordBody = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of the record decoder.
var (
	// errShort means the buffer ends inside a record (a torn tail when
	// it is the end of a file).
	errShort = errors.New("record truncated")
	// errCorrupt means the record's length or checksum is wrong.
	errCorrupt = errors.New("record corrupt")
)

// recordMeta is the fixed part of a record body.
type recordMeta struct {
	Seq    uint64
	Cursor uint64
	Rows   uint32
}

// appendRecord appends the encoding of one record to dst.
func appendRecord(dst []byte, m recordMeta, payload []byte) []byte {
	bodyLen := recFixedBody + len(payload)
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(bodyLen))
	dst = binary.LittleEndian.AppendUint32(dst, 0) // checksum, filled below
	dst = binary.LittleEndian.AppendUint64(dst, m.Seq)
	dst = binary.LittleEndian.AppendUint64(dst, m.Cursor)
	dst = binary.LittleEndian.AppendUint32(dst, m.Rows)
	dst = append(dst, payload...)
	sum := crc32.Checksum(dst[start+recHeaderLen:], castagnoli)
	binary.LittleEndian.PutUint32(dst[start+4:], sum)
	return dst
}

// decodeRecord decodes the record at the start of b. It returns the record's
// fixed fields, its payload (aliasing b) and the number of bytes it took.
// errShort says b ends inside the record; errCorrupt says the record is bad.
func decodeRecord(b []byte) (m recordMeta, payload []byte, n int, err error) {
	if len(b) < recHeaderLen {
		return m, nil, 0, errShort
	}
	bodyLen := binary.LittleEndian.Uint32(b)
	if bodyLen < recFixedBody || bodyLen > maxRecordBody {
		return m, nil, 0, fmt.Errorf("%w: body length %d", errCorrupt, bodyLen)
	}
	total := recHeaderLen + int(bodyLen)
	if len(b) < total {
		return m, nil, 0, errShort
	}
	body := b[recHeaderLen:total]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return m, nil, 0, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	m.Seq = binary.LittleEndian.Uint64(body)
	m.Cursor = binary.LittleEndian.Uint64(body[8:])
	m.Rows = binary.LittleEndian.Uint32(body[16:])
	return m, body[recFixedBody:], total, nil
}
