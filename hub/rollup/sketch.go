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
// (bounded memory) beyond exactLimit.
type Sketch struct {
	exact []uint64 // sorted, no duplicates; nil once regs is set
	regs  []uint8  // HyperLogLog registers, nil while exact
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
	if s.regs != nil {
		s.addHLL(h)
		return
	}
	i, found := slices.BinarySearch(s.exact, h)
	if found {
		return
	}
	s.exact = slices.Insert(s.exact, i, h)
	if len(s.exact) > exactLimit {
		s.promote()
	}
}

func (s *Sketch) promote() {
	s.regs = make([]uint8, hllRegisters)
	for _, h := range s.exact {
		s.addHLL(h)
	}
	s.exact = nil
}

func (s *Sketch) addHLL(h uint64) {
	idx := h >> (64 - hllPrecision)
	w := h<<hllPrecision | 1<<(hllPrecision-1)
	rank := uint8(bits.LeadingZeros64(w)) + 1
	if rank > s.regs[idx] {
		s.regs[idx] = rank
	}
}

// Merge adds every member of o into s.
func (s *Sketch) Merge(o *Sketch) {
	if o == nil {
		return
	}
	if o.regs == nil {
		for _, h := range o.exact {
			s.Add(h)
		}
		return
	}
	if s.regs == nil {
		s.promote()
	}
	for i, r := range o.regs {
		if r > s.regs[i] {
			s.regs[i] = r
		}
	}
}

// Exact reports whether Count is exact.
func (s *Sketch) Exact() bool { return s.regs == nil }

// Count returns the number of distinct hashes added (an estimate once the
// sketch has left its exact form).
func (s *Sketch) Count() uint64 {
	if s.regs == nil {
		return uint64(len(s.exact))
	}
	m := float64(hllRegisters)
	sum := 0.0
	zeros := 0
	for _, r := range s.regs {
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
	return Sketch{exact: slices.Clone(s.exact), regs: slices.Clone(s.regs)}
}

// sketchState is the serialised form of a Sketch.
type sketchState struct {
	Exact []uint64 `json:"e,omitempty"`
	Regs  []byte   `json:"r,omitempty"`
}

func (s *Sketch) state() sketchState { return sketchState{Exact: s.exact, Regs: s.regs} }

func (st sketchState) sketch() (Sketch, error) {
	if st.Regs != nil {
		if len(st.Regs) != hllRegisters || st.Exact != nil {
			return Sketch{}, errBadSketch
		}
		for _, r := range st.Regs {
			if r > 64-hllPrecision+1 {
				return Sketch{}, errBadSketch
			}
		}
		return Sketch{regs: slices.Clone(st.Regs)}, nil
	}
	if len(st.Exact) > exactLimit || !slices.IsSorted(st.Exact) {
		return Sketch{}, errBadSketch
	}
	for i := 1; i < len(st.Exact); i++ {
		if st.Exact[i] == st.Exact[i-1] {
			return Sketch{}, errBadSketch
		}
	}
	return Sketch{exact: slices.Clone(st.Exact)}, nil
}
