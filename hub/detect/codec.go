package detect

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// enc writes the snapshot: varints, fixed float64 bits and length-prefixed
// strings, in an order fixed by the code (sorted keys), so two equal
// states give equal bytes.
type enc struct {
	w   *bufio.Writer
	buf [binary.MaxVarintLen64]byte
	err error
}

func (e *enc) u(v uint64) {
	n := binary.PutUvarint(e.buf[:], v)
	e.write(e.buf[:n])
}

func (e *enc) i(v int64) {
	n := binary.PutVarint(e.buf[:], v)
	e.write(e.buf[:n])
}

func (e *enc) f(v float64) {
	binary.LittleEndian.PutUint64(e.buf[:8], math.Float64bits(v))
	e.write(e.buf[:8])
}

func (e *enc) b(v bool) {
	if v {
		e.u(1)
	} else {
		e.u(0)
	}
}

func (e *enc) s(v string) {
	e.u(uint64(len(v)))
	if e.err == nil {
		_, e.err = e.w.WriteString(v)
	}
}

func (e *enc) bytes(v []byte) {
	e.u(uint64(len(v)))
	e.write(v)
}

func (e *enc) write(p []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(p)
	}
}

// dec reads what enc wrote. It never panics on bad input: the first
// error sticks and later reads return zero values.
type dec struct {
	r   *bufio.Reader
	err error
}

// maxLen bounds any length read from a snapshot (strings, counts).
const maxLen = 1 << 26

var errSnapshot = errors.New("corrupt detect snapshot")

func (d *dec) u() uint64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(d.r)
	if err != nil {
		d.fail(err)
	}
	return v
}

func (d *dec) i() int64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadVarint(d.r)
	if err != nil {
		d.fail(err)
	}
	return v
}

func (d *dec) f() float64 {
	var b [8]byte
	if d.err != nil {
		return 0
	}
	if _, err := io.ReadFull(d.r, b[:]); err != nil {
		d.fail(err)
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(b[:]))
	if math.IsNaN(v) || math.IsInf(v, 0) {
		d.fail(errors.New("non-finite number"))
		return 0
	}
	return v
}

func (d *dec) b() bool { return d.u() != 0 }

// n reads a count and checks it against limit.
func (d *dec) n(limit int) int {
	v := d.u()
	if v > uint64(limit) {
		d.fail(fmt.Errorf("count %d over %d", v, limit))
		return 0
	}
	return int(v)
}

func (d *dec) bytes() []byte {
	n := d.n(maxLen)
	if d.err != nil {
		return nil
	}
	// Grow with what is really there: a corrupt length cannot make us
	// allocate more than the input holds.
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, d.r, int64(n)); err != nil {
		d.fail(err)
		return nil
	}
	return buf.Bytes()
}

func (d *dec) s() string { return string(d.bytes()) }

func (d *dec) fail(err error) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %v", errSnapshot, err)
	}
}
