package store

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// FuzzParseEnvelope checks the hand-written envelope decoder against
// proto.Unmarshal of jasperv1.Command: the same inputs fail, and the
// others give the same version, type and payload.
func FuzzParseEnvelope(f *testing.F) {
	for _, e := range randomLog(f, 3, 10) {
		f.Add(e)
	}
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x02, 0x10, 0x01})
	// Repeated fields (the last wins), a field of the wrong wire type, an
	// unknown field, a group, a truncated payload, field number 0.
	f.Add([]byte{0x08, 0x01, 0x08, 0x05, 0x1a, 0x01, 0xaa, 0x1a, 0x02, 0xbb, 0xcc})
	f.Add([]byte{0x0a, 0x01, 0x01, 0x10, 0x01, 0x1a, 0x00})
	f.Add([]byte{0x20, 0x07, 0x2b, 0x08, 0x01, 0x2c, 0x08, 0x01})
	f.Add([]byte{0x08, 0x01, 0x1a, 0x05, 0x01})
	f.Add([]byte{0x00, 0x01})
	f.Add(protowire.AppendVarint([]byte{0x08}, 1<<40))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := parseEnvelope(data)
		var want jasperv1.Command
		werr := proto.Unmarshal(data, &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("parseEnvelope error %v, proto.Unmarshal error %v", err, werr)
		}
		if err != nil {
			return
		}
		if got.Version != want.Version || got.Type != want.Type || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("parseEnvelope = %d/%d/%x, proto.Unmarshal = %d/%d/%x", got.Version, got.Type, got.Payload, want.Version, want.Type, want.Payload)
		}
	})
}
