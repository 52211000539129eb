package summary

import (
	"testing"
	"unsafe"
)

func TestRowStateIsOneCacheLine(t *testing.T) {
	if s := unsafe.Sizeof(rowState{}); s != 64 {
		t.Errorf("rowState is %d bytes, want 64", s)
	}
	if s := unsafe.Sizeof(distinct{}); s != 16 {
		t.Errorf("distinct is %d bytes, want 16", s)
	}
}

// The TTL range shares the distinct set's spare bytes: adding values in
// every mode must leave it alone.
func TestDistinctKeepsAux(t *testing.T) {
	arena := slotArena{max: 1}
	for _, n := range []int{2, 10, 100, 1000} {
		var d distinct
		d.aux = [2]uint8{7, 200}
		for i := range n {
			d.add(uint32(i*7919), &arena)
		}
		if d.aux != [2]uint8{7, 200} {
			t.Errorf("%d values: aux %v", n, d.aux)
		}
		arena.reset()
	}
	// Without slots, a row falls back to the in-place bitmap.
	none := slotArena{}
	var d distinct
	d.aux = [2]uint8{1, 2}
	for i := range 50 {
		d.add(uint32(i), &none)
	}
	if c := d.count(&none); c < 35 || c > 70 || d.aux != [2]uint8{1, 2} {
		t.Errorf("bitmap: 50 values counted as %d, aux %v", c, d.aux)
	}
}
