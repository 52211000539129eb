package summary

// Open-addressing hash tables for the per-packet lookups. Go maps spend a
// cache miss on the control word of a group and often another on the slot;
// with hundreds of thousands of rows per bin that was a third of the
// program's time. Here one probe is one 8-byte word, eight to a cache line,
// with linear probing at a load factor of at most 3/4: a lookup usually
// costs a single miss, plus the row itself, which the update needs anyway.

const (
	tableInitial = 1 << 16
	tableLoadNum = 3
	tableLoadDen = 4
)

func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// rowTable maps row keys to row indices. An entry is tag<<32 | index, tag
// being the hash's upper half with the low bit set (0 is an empty entry);
// the key itself is compared in the row store.
type rowTable struct {
	slots []uint64
	n     int
}

func (t *rowTable) init() { t.slots = make([]uint64, tableInitial) }

func (t *rowTable) reset() {
	clear(t.slots)
	t.n = 0
}

// find returns the index of k's row, or the position where k goes.
func (a *Aggregator) findRow(k rowKey) (idx uint32, pos int, ok bool) {
	t := &a.table
	mask := uint64(len(t.slots) - 1)
	h := mix64(uint64(k))
	tag := uint64(h>>32 | 1)
	for p := h & mask; ; p = (p + 1) & mask {
		e := t.slots[p]
		if e == 0 {
			return 0, int(p), false
		}
		if e>>32 == tag {
			if i := uint32(e); a.row(i).key == k {
				return i, int(p), true
			}
		}
	}
}

// putRow records row idx (of key k) at pos, as returned by findRow.
func (a *Aggregator) putRow(k rowKey, idx uint32, pos int) {
	t := &a.table
	t.slots[pos] = (mix64(uint64(k))>>32|1)<<32 | uint64(idx)
	t.n++
	if t.n*tableLoadDen > len(t.slots)*tableLoadNum {
		a.growRows()
	}
}

func (a *Aggregator) growRows() {
	t := &a.table
	t.slots = make([]uint64, 2*len(t.slots))
	mask := uint64(len(t.slots) - 1)
	for i := range a.nrows {
		k := a.row(uint32(i)).key
		h := mix64(uint64(k))
		p := h & mask
		for t.slots[p] != 0 {
			p = (p + 1) & mask
		}
		t.slots[p] = (h>>32|1)<<32 | uint64(i)
	}
}

// srcTable maps IPv4 sources to indices in Aggregator.st4. An entry is
// address<<32 | (index+1); 0 is empty.
type srcTable struct {
	slots []uint64
	n     int
}

func (t *srcTable) init() { t.slots = make([]uint64, tableInitial) }

func (t *srcTable) reset() {
	clear(t.slots)
	t.n = 0
}

// lookup returns the index of src.
func (t *srcTable) lookup(src uint32) (uint32, bool) {
	mask := uint64(len(t.slots) - 1)
	for p := mix64(uint64(src)) & mask; ; p = (p + 1) & mask {
		e := t.slots[p]
		if e == 0 {
			return 0, false
		}
		if uint32(e>>32) == src {
			return uint32(e) - 1, true
		}
	}
}

// get returns the index of src, or inserts next (the caller appends the
// state at that index) and returns it with false.
func (t *srcTable) get(src uint32, next uint32) (uint32, bool) {
	mask := uint64(len(t.slots) - 1)
	p := mix64(uint64(src)) & mask
	for {
		e := t.slots[p]
		if e == 0 {
			break
		}
		if uint32(e>>32) == src {
			return uint32(e) - 1, true
		}
		p = (p + 1) & mask
	}
	t.slots[p] = uint64(src)<<32 | uint64(next+1)
	t.n++
	if t.n*tableLoadDen > len(t.slots)*tableLoadNum {
		t.grow()
	}
	return next, false
}

func (t *srcTable) grow() {
	old := t.slots
	t.slots = make([]uint64, 2*len(old))
	mask := uint64(len(t.slots) - 1)
	for _, e := range old {
		if e == 0 {
			continue
		}
		p := mix64(e>>32) & mask
		for t.slots[p] != 0 {
			p = (p + 1) & mask
		}
		t.slots[p] = e
	}
}
