package packet_test

import (
	"testing"

	"github.com/google/gopacket/layers"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/packet"
)

var fuzzLinkTypes = []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL, layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6}

// FuzzDecodeClassify feeds arbitrary frames of every link type to the
// decoder: it never panics, and each frame ends as exactly one of a
// classified IP packet (with a valid class), a non-IP frame or a decode
// error, as the counters show.
func FuzzDecodeClassify(f *testing.F) {
	f.Add(uint8(0), tcp4(f, "S"))
	f.Add(uint8(0), tcp4(f, "SA"))
	f.Add(uint8(0), icmp4Frame(f, 3, 3, make([]byte, 36)))
	f.Add(uint8(2), tcp4(f, "R")[14:])
	f.Add(uint8(1), append([]byte{0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x86, 0xdd}, make([]byte, 48)...))
	f.Add(uint8(4), append([]byte{0x60, 0, 0, 0, 0, 16, 44, 64}, make([]byte, 56)...))
	f.Add(uint8(0), []byte{})
	decoders := make([]*packet.Decoder, len(fuzzLinkTypes))
	for i, lt := range fuzzLinkTypes {
		d, err := packet.NewDecoder(lt)
		if err != nil {
			f.Fatal(err)
		}
		decoders[i] = d
	}
	f.Fuzz(func(t *testing.T, sel uint8, frame []byte) {
		d := decoders[int(sel)%len(decoders)]
		before := d.Counters
		var info packet.Info
		r := d.Decode(frame, &info)
		after := d.Counters
		delta := (after.IP - before.IP) + (after.NonIP - before.NonIP) + (after.DecodeErrors - before.DecodeErrors)
		if after.Frames-before.Frames != 1 || delta != 1 {
			t.Fatalf("frame counted %d times (result %v)", delta, r)
		}
		switch r {
		case packet.OK:
			if after.IP-before.IP != 1 {
				t.Fatal("OK not counted as IP")
			}
			if info.Class <= jasperv1.TrafficClass_TRAFFIC_CLASS_UNSPECIFIED || info.Class > jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER {
				t.Fatalf("class %v", info.Class)
			}
			if !info.Src.IsValid() || !info.Dst.IsValid() || info.Src.Is6() != info.IPv6 {
				t.Fatalf("addresses %v %v v6=%v", info.Src, info.Dst, info.IPv6)
			}
			if info.Fragment && info.Class != jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER {
				t.Fatalf("fragment of class %v", info.Class)
			}
			if info.Fragment != (after.Fragments-before.Fragments == 1) {
				t.Fatal("fragment counter disagrees")
			}
		case packet.NonIP:
			if after.NonIP-before.NonIP != 1 {
				t.Fatal("non-IP not counted")
			}
		case packet.DecodeError:
			if after.DecodeErrors-before.DecodeErrors != 1 {
				t.Fatal("decode error not counted")
			}
		default:
			t.Fatalf("result %v", r)
		}
	})
}
