package summary

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// Distinct counting of destination addresses (and, on overflow rows, of
// destination ports) per row, without allocation per packet:
//
//   - up to inlineN values are kept exactly inside the row;
//   - then the row takes a slot (slotWords uint32) from the bin's slot arena
//     and keeps up to slotWords values exactly;
//   - above that the same slot turns into a HyperLogLog sketch of
//     hllRegisters one-byte registers (standard error about 6.5 %).
//
// Slots are bounded per bin (Config.MaxSketches). A row that needs a slot
// when none is left keeps counting in a 96-bit linear-counting bitmap in
// place of its inline values (good to a few hundred). Values are 32-bit:
// the IPv4 address itself (exact), or a 32-bit hash of an IPv6 address or
// the port.

const (
	inlineN      = 3
	slotWords    = 64
	slotBytes    = slotWords * 4
	bitmapBits   = inlineN * 32
	hllRegisters = slotBytes // 256 one-byte registers in the same 256 bytes
)

const (
	modeInline uint8 = iota
	modeList
	modeHLL
	modeBitmap
)

// distinct is 16 bytes. In modeList and modeHLL, inline[0] holds the slot
// index. aux is not used by distinct: it fills what would be padding, and
// rowState keeps its TTL range there so that a row is exactly one 64-byte
// cache line.
type distinct struct {
	inline [inlineN]uint32
	n      uint8 // values held exactly (inline or list)
	mode   uint8
	aux    [2]uint8
}

func (d *distinct) slot() uint32 { return d.inline[0] }

// slot is 256 bytes: up to slotWords little-endian uint32 values, or
// hllRegisters HyperLogLog registers.
type slot [slotBytes]byte

func (s *slot) word(i uint8) uint32       { return binary.LittleEndian.Uint32(s[int(i)*4:]) }
func (s *slot) setWord(i uint8, v uint32) { binary.LittleEndian.PutUint32(s[int(i)*4:], v) }

// slotArena hands out zeroed slots in chunks, reused across bins.
type slotArena struct {
	chunks [][]slot
	used   int
	max    int
}

const slotChunk = 1024

func (a *slotArena) reset() { a.used = 0 }

func (a *slotArena) alloc() (uint32, bool) {
	if a.used >= a.max {
		return 0, false
	}
	ci, off := a.used/slotChunk, a.used%slotChunk
	if ci == len(a.chunks) {
		a.chunks = append(a.chunks, make([]slot, slotChunk))
	}
	s := &a.chunks[ci][off]
	*s = slot{}
	a.used++
	return uint32(a.used - 1), true
}

func (a *slotArena) get(i uint32) *slot {
	return &a.chunks[i/slotChunk][i%slotChunk]
}

// mix32 is a 64-bit finaliser (splitmix64) of a 32-bit value.
func mix32(v uint32) uint64 {
	z := uint64(v) + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// add inserts v.
func (d *distinct) add(v uint32, arena *slotArena) {
	switch d.mode {
	case modeInline:
		for i := uint8(0); i < d.n; i++ {
			if d.inline[i] == v {
				return
			}
		}
		if d.n < inlineN {
			d.inline[d.n] = v
			d.n++
			return
		}
		idx, ok := arena.alloc()
		if !ok {
			d.toBitmap()
			d.addBitmap(v)
			return
		}
		s := arena.get(idx)
		for i, x := range d.inline {
			s.setWord(uint8(i), x)
		}
		s.setWord(inlineN, v)
		d.n = inlineN + 1
		d.inline = [inlineN]uint32{idx}
		d.mode = modeList
	case modeList:
		s := arena.get(d.slot())
		for i := uint8(0); i < d.n; i++ {
			if s.word(i) == v {
				return
			}
		}
		if d.n < slotWords {
			s.setWord(d.n, v)
			d.n++
			return
		}
		d.toHLL(s)
		hllAdd(s, v)
	case modeHLL:
		hllAdd(arena.get(d.slot()), v)
	case modeBitmap:
		d.addBitmap(v)
	}
}

func (d *distinct) toBitmap() {
	vals := d.inline
	d.inline = [inlineN]uint32{}
	d.mode = modeBitmap
	for _, v := range vals[:d.n] {
		d.addBitmap(v)
	}
	d.n = 0
}

func (d *distinct) addBitmap(v uint32) {
	h := mix32(v) % bitmapBits
	d.inline[h/32] |= 1 << (h % 32)
}

func (d *distinct) toHLL(s *slot) {
	vals := *s
	*s = slot{}
	for i := uint8(0); i < d.n; i++ {
		hllAdd(s, vals.word(i))
	}
	d.n = 0
	d.mode = modeHLL
}

func hllAdd(s *slot, v uint32) {
	h := mix32(v)
	idx := h >> 56 // 8 bits: 256 registers
	rank := uint8(bits.LeadingZeros64(h<<8|1<<7)) + 1
	if rank > s[idx] {
		s[idx] = rank
	}
}

// count returns the number of distinct values (exact or estimated).
func (d *distinct) count(arena *slotArena) uint32 {
	switch d.mode {
	case modeInline, modeList:
		return uint32(d.n)
	case modeBitmap:
		zeros := 0
		for _, w := range d.inline {
			zeros += 32 - bits.OnesCount32(w)
		}
		if zeros == 0 {
			zeros = 1 // saturated: the estimate is a lower bound
		}
		return uint32(math.Round(bitmapBits * math.Log(bitmapBits/float64(zeros))))
	}
	r := arena.get(d.slot())
	const m = float64(hllRegisters)
	var sum float64
	zeros := 0
	for _, x := range r {
		sum += math.Ldexp(1, -int(x))
		if x == 0 {
			zeros++
		}
	}
	alpha := 0.7213 / (1 + 1.079/m)
	e := alpha * m * m / sum
	if e <= 2.5*m && zeros > 0 {
		e = m * math.Log(m/float64(zeros))
	}
	if e < slotWords+1 {
		e = slotWords + 1 // it held more than slotWords exact values
	}
	if e > math.MaxUint32 {
		e = math.MaxUint32
	}
	return uint32(math.Round(e))
}
