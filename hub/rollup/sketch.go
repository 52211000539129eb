package rollup

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"
	"slices"
)

// Distinct-count sketch parameters (a 4-sigma error is about 13 %). A sketch keeps the exact set of hashes
// up to exactLimit members, then switches for good to a HyperLogLog with
// 2^hllPrecision one-byte registers (standard error about 1.04/sqrt(1024),
// 3.3 %). Both forms are deterministic functions of the inserted values and
// of their order only through the switch point, which itself depends only
// on the set, so two replicas fed the same log hold byte-equal sketches.
const (
	exactLimit   = 64
	hllPrecision = 10
	hllRegisters = 1 << hllPrecision
)

// Sketch counts distinct 64-bit hashes: exactly while small, approximately
// (bounded memory) beyond exactLimit. A single member is held inline (no
// allocation: most cells of a darknet bin see one source); the HyperLogLog
// registers are packed eight to a word, so a sketch holds one pointer.
type Sketch struct {
	// w is the members, sorted, when there are 2..exactLimit of them, or
	// the hllRegisters one-byte registers (register i is byte i%8 of word
	// i/8, counting from the low byte) once hll is set.
	w    []uint64
	one  uint64 // the member when has1
	has1 bool   // exactly one member, in one (w is empty)
	hll  bool
}

// hashAddr maps an address to a well-mixed 64-bit hash. It uses no random
// seed, so every replica computes the same value.
func hashAddr(a netip.Addr) uint64 {
	b := a.As16()
	h := binary.BigEndian.Uint64(b[:8])*0x9e3779b97f4a7c15 ^ binary.BigEndian.Uint64(b[8:])
	return mix64(h)
}

// hashUint mixes a small integer (a port) into a 64-bit hash.
func hashUint(v uint64) uint64 { return mix64(v + 0x9e3779b97f4a7c15) }

// mix64 is the splitmix64 finaliser.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Add inserts a hash.
func (s *Sketch) Add(h uint64) {
	if s.hll {
		s.addHLL(h)
		return
	}
	if len(s.w) == 0 {
		switch {
		case !s.has1:
			s.one, s.has1 = h, true
		case h != s.one:
			a, b := min(s.one, h), max(s.one, h)
			s.w = append(s.w[:0], a, b)
			s.one, s.has1 = 0, false
		}
		return
	}
	i, found := slices.BinarySearch(s.w, h)
	if found {
		return
	}
	s.w = slices.Insert(s.w, i, h)
	if len(s.w) > exactLimit {
		s.promote()
	}
}

// members returns the exact members (one must not outlive the call).
func (s *Sketch) members(one *[1]uint64) []uint64 {
	if s.has1 {
		one[0] = s.one
		return one[:]
	}
	return s.w
}

func (s *Sketch) promote() {
	var one [1]uint64
	m := s.members(&one)
	regs := make([]uint64, hllRegisters/8)
	s.w, s.one, s.has1, s.hll = regs, 0, false, true
	for _, h := range m {
		s.addHLL(h)
	}
}

func (s *Sketch) addHLL(h uint64) { addHLLWord(s.regWord(h), h) }

// regWord returns the word of an HLL sketch that holds h's register.
func (s *Sketch) regWord(h uint64) *uint64 { return &s.w[h>>(64-hllPrecision)>>3] }

// addHLLWord raises h's register, in word (regWord(h)), to h's rank.
func addHLLWord(word *uint64, h uint64) {
	sh := (h >> (64 - hllPrecision) & 7) * 8
	rank := uint64(bits.LeadingZeros64(h<<hllPrecision|1<<(hllPrecision-1))) + 1
	if rank > (*word>>sh)&0xff {
		*word = *word&^(0xff<<sh) | rank<<sh
	}
}

// reg returns register i of an HLL sketch.
func (s *Sketch) reg(i int) uint8 { return uint8(s.w[i>>3] >> ((i & 7) * 8)) }

// Merge adds every member of o into s.
func (s *Sketch) Merge(o *Sketch) {
	if o == nil {
		return
	}
	if !o.hll {
		var one [1]uint64
		for _, h := range o.members(&one) {
			s.Add(h)
		}
		return
	}
	if !s.hll {
		s.promote()
	}
	for i, ow := range o.w {
		sw := s.w[i]
		if sw == ow {
			continue
		}
		var out uint64
		for sh := 0; sh < 64; sh += 8 {
			out |= max((sw>>sh)&0xff, (ow>>sh)&0xff) << sh
		}
		s.w[i] = out
	}
}

// Exact reports whether Count is exact.
func (s *Sketch) Exact() bool { return !s.hll }

// Count returns the number of distinct hashes added (an estimate once the
// sketch has left its exact form).
func (s *Sketch) Count() uint64 {
	if !s.hll {
		if s.has1 {
			return 1
		}
		return uint64(len(s.w))
	}
	m := float64(hllRegisters)
	sum := 0.0
	zeros := 0
	for i := range hllRegisters {
		r := s.reg(i)
		sum += math.Ldexp(1, -int(r))
		if r == 0 {
			zeros++
		}
	}
	alpha := 0.7213 / (1 + 1.079/m)
	est := alpha * m * m / sum
	if est <= 2.5*m && zeros > 0 {
		est = m * math.Log(m/float64(zeros)) // linear counting
	}
	return uint64(est + 0.5)
}

// clone returns a deep copy.
func (s *Sketch) clone() Sketch {
	c := *s
	c.w = slices.Clone(s.w)
	return c
}

// sketchState is the serialised form of a Sketch.
type sketchState struct {
	Exact []uint64 `json:"e,omitempty"`
	Regs  []byte   `json:"r,omitempty"`
}

func (s *Sketch) state() sketchState {
	if s.hll {
		regs := make([]byte, hllRegisters)
		for i := range regs {
			regs[i] = s.reg(i)
		}
		return sketchState{Regs: regs}
	}
	if s.has1 {
		return sketchState{Exact: []uint64{s.one}}
	}
	if len(s.w) == 0 {
		return sketchState{}
	}
	return sketchState{Exact: s.w}
}

func (st sketchState) sketch() (Sketch, error) {
	if st.Regs != nil {
		if len(st.Regs) != hllRegisters || st.Exact != nil {
			return Sketch{}, errBadSketch
		}
		w := make([]uint64, hllRegisters/8)
		for i, r := range st.Regs {
			if r > 64-hllPrecision+1 {
				return Sketch{}, errBadSketch
			}
			w[i>>3] |= uint64(r) << ((i & 7) * 8)
		}
		return Sketch{w: w, hll: true}, nil
	}
	if len(st.Exact) > exactLimit || !slices.IsSorted(st.Exact) {
		return Sketch{}, errBadSketch
	}
	for i := 1; i < len(st.Exact); i++ {
		if st.Exact[i] == st.Exact[i-1] {
			return Sketch{}, errBadSketch
		}
	}
	switch len(st.Exact) {
	case 0:
		return Sketch{}, nil
	case 1:
		return Sketch{one: st.Exact[0], has1: true}, nil
	}
	return Sketch{w: slices.Clone(st.Exact)}, nil
}
