package enrol

import (
	"math/big"
	"reflect"
	"testing"

	"github.com/jasperfed/jasper/hub/store"
)

var (
	_ store.ResultCodec = (*Module)(nil)
	_ store.ErrorKinds  = (*Module)(nil)
)

func TestResultCodecRoundTrip(t *testing.T) {
	m := &Module{}
	for _, v := range []any{
		EnrolResult{Reenrolled: true},
		EnrolResult{},
		RevokeResult{Serials: []*big.Int{big.NewInt(7), new(big.Int).Lsh(big.NewInt(1), 130)}},
	} {
		b, err := m.MarshalResult(v)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.UnmarshalResult(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, v) {
			t.Fatalf("round trip of %#v = %#v", v, got)
		}
	}
	if _, err := m.MarshalResult(42); err == nil {
		t.Fatal("an int result encoded")
	}
	for _, bad := range []string{"", "{}", "[", `{"enrol":7}`} {
		if _, err := m.UnmarshalResult([]byte(bad)); err == nil {
			t.Fatalf("%q decoded", bad)
		}
	}
}

func FuzzUnmarshalResult(f *testing.F) {
	m := &Module{}
	for _, s := range []string{`{"enrol":{"Reenrolled":true}}`, `{"revoke":{"Serials":[1,2]}}`, `{}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := m.UnmarshalResult(b)
		if err != nil {
			return
		}
		if _, err := m.MarshalResult(v); err != nil {
			t.Fatalf("decoded %#v does not encode: %v", v, err)
		}
	})
}
