package outbox

import (
	"testing"

	"github.com/jasperfed/jasper/alerting/route"
)

// TestDeliveryIDNamesContent checks that the delivery id depends on the
// notification's time and content, not only on the recipient's sequence:
// a reset federation must not reuse the id of an alert a receiver saw.
func TestDeliveryIDNamesContent(t *testing.T) {
	a := []route.Item{{FindingBytes: []byte("finding-a")}}
	b := []route.Item{{FindingBytes: []byte("finding-b")}}
	id := DeliveryID("cert-jp", 1, "email", 1000, a)
	if again := DeliveryID("cert-jp", 1, "email", 1000, a); again != id {
		t.Fatalf("same input gave %s and %s", id, again)
	}
	for name, other := range map[string]string{
		"content":   DeliveryID("cert-jp", 1, "email", 1000, b),
		"time":      DeliveryID("cert-jp", 1, "email", 2000, a),
		"channel":   DeliveryID("cert-jp", 1, "webhook", 1000, a),
		"recipient": DeliveryID("cert-de", 1, "email", 1000, a),
		"sequence":  DeliveryID("cert-jp", 2, "email", 1000, a),
	} {
		if other == id {
			t.Errorf("a different %s gave the same id %s", name, id)
		}
	}
}
