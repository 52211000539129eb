// Package stixschema compiles the OASIS STIX 2.1 JSON schemas kept in
// alerting/testdata for tests: Validate checks a bundle or one object.
package stixschema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Validator checks STIX JSON against the schemas.
type Validator struct {
	bundle *jsonschema.Schema
	byType map[string]*jsonschema.Schema
}

// Dir is the schema folder in the repository.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "stix2-json-schemas", "schemas")
}

// Load compiles every schema under Dir.
func Load() (*Validator, error) {
	c := jsonschema.NewCompiler()
	ids := map[string]string{} // file base name without .json -> $id
	err := filepath.WalkDir(Dir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		var head struct {
			ID string `json:"$id"`
		}
		if err := json.Unmarshal(b, &head); err != nil || head.ID == "" {
			return fmt.Errorf("%s: no $id", p)
		}
		ids[strings.TrimSuffix(filepath.Base(p), ".json")] = head.ID
		return c.AddResource(head.ID, doc)
	})
	if err != nil {
		return nil, err
	}
	v := &Validator{byType: map[string]*jsonschema.Schema{}}
	if v.bundle, err = c.Compile(ids["bundle"]); err != nil {
		return nil, fmt.Errorf("compile bundle: %w", err)
	}
	for name, id := range ids {
		s, err := c.Compile(id)
		if err != nil {
			return nil, fmt.Errorf("compile %s: %w", name, err)
		}
		v.byType[name] = s
	}
	return v, nil
}

// Bundle validates a bundle's JSON.
func (v *Validator) Bundle(b []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return err
	}
	return v.bundle.Validate(doc)
}

// Object validates one object's JSON against the schema of its type.
func (v *Validator) Object(b []byte) error {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return err
	}
	s := v.byType[head.Type]
	if s == nil {
		return fmt.Errorf("no schema for type %q", head.Type)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return err
	}
	return s.Validate(doc)
}
