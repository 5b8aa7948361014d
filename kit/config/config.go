// Package config loads a switchboard configuration: defaults set by the
// caller, then a YAML file, then SB_* environment variables, then the
// configuration's own Validate.
//
// Environment variables are named after the YAML path of the key they
// override: nats.url is SB_NATS_URL and chat.console.addr is
// SB_CHAT_CONSOLE_ADDR. They are how containers and systemd units set one
// value, and the only place secrets should come from besides files.
package config

import (
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Load fills dst, a pointer to a struct with yaml tags that the caller has
// already set to its defaults (DefaultConfig()).
//
// If path is not empty, the YAML file there is decoded into dst strictly: an
// unknown key is an error naming the key and its line, because a misspelt
// key would otherwise be silently ignored and the default used. Keys absent
// from the file keep their defaults. time.Duration values are written as
// "90s" or "10m".
//
// Then every variable named by EnvName for a field of dst that is set and not
// empty overrides that field. Strings, bools, integers, floats,
// time.Duration, types implementing encoding.TextUnmarshaler and []string
// (comma separated) can be set this way; other fields (maps, pointers,
// other slices) only from the file. Fields tagged yaml:"-" are never
// touched. A nil getenv reads no variables.
//
// Finally, if dst has a Validate() error method, its error is returned
// wrapped as "config: …".
func Load(path string, getenv func(string) string, dst any) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: load into %T: want a non-nil pointer to a struct", dst)
	}
	if path != "" {
		if err := decodeFile(path, dst); err != nil {
			return err
		}
	}
	if getenv != nil {
		if err := applyEnv(v.Elem(), "", getenv); err != nil {
			return err
		}
	}
	// The pointer's method set includes value-receiver methods, so this
	// finds Validate whichever receiver the config type declared it on.
	if val, ok := dst.(interface{ Validate() error }); ok {
		if err := val.Validate(); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	return nil
}

// EnvName returns the environment variable that overrides the key at the
// dotted YAML path: "chat.console.addr" gives "SB_CHAT_CONSOLE_ADDR".
// Dashes become underscores, since shells cannot set names containing them.
func EnvName(path string) string {
	return "SB_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(path))
}

// decodeFile decodes the YAML file at path into dst, refusing unknown keys.
func decodeFile(path string, dst any) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: read %s: %w", path, err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	// yaml.v3 decodes "10m" into a time.Duration itself (and refuses a bare
	// integer, which would silently mean nanoseconds); config_test.go pins
	// that down.
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) { // EOF: an empty file
		return fmt.Errorf("config: decode %s: %w", path, err)
	}
	return nil
}

var (
	durationType        = reflect.TypeFor[time.Duration]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// applyEnv overrides the fields of the struct v, whose YAML path is prefix,
// from the environment. It reports every bad variable, not just the first,
// so one restart fixes them all.
func applyEnv(v reflect.Value, prefix string, getenv func(string) string) error {
	var errs []error
	for i := range v.NumField() {
		field := v.Type().Field(i)
		if !field.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(field.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(field.Name) // yaml.v3's default key
		}
		fv := v.Field(i)
		if strings.Contains(","+opts+",", ",inline,") && fv.Kind() == reflect.Struct {
			errs = append(errs, applyEnv(fv, prefix, getenv))
			continue
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		if fv.Kind() == reflect.Struct && !reflect.PointerTo(fv.Type()).Implements(textUnmarshalerType) {
			errs = append(errs, applyEnv(fv, path, getenv))
			continue
		}
		env := EnvName(path)
		s := getenv(env)
		if s == "" {
			continue
		}
		if err := set(fv, s); err != nil {
			errs = append(errs, fmt.Errorf("%s: parse %q as %s for %s: %w", env, s, kindName(fv.Type()), path, err))
		}
	}
	return errors.Join(errs...)
}

// set parses s into fv. Fields of other kinds are left alone: they can only
// be set from the file.
func set(fv reflect.Value, s string) error {
	if u, ok := fv.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(s))
	}
	if fv.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		fv.SetInt(int64(d))
		return nil
	}
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return numErr(err)
		}
		fv.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, fv.Type().Bits())
		if err != nil {
			return numErr(err)
		}
		fv.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, fv.Type().Bits())
		if err != nil {
			return numErr(err)
		}
		fv.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(s, fv.Type().Bits())
		if err != nil {
			return numErr(err)
		}
		fv.SetFloat(f)
	case reflect.Slice:
		if fv.Type().Elem().Kind() != reflect.String {
			return nil
		}
		var items []string
		for item := range strings.SplitSeq(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		list := reflect.MakeSlice(fv.Type(), len(items), len(items))
		for i, item := range items {
			list.Index(i).SetString(item)
		}
		fv.Set(list)
	}
	return nil
}

// numErr drops strconv's `strconv.Atoi: parsing "x":` prefix, which would
// repeat what the caller's message already says, keeping only the reason
// ("invalid syntax", "value out of range").
func numErr(err error) error {
	if ne, ok := errors.AsType[*strconv.NumError](err); ok {
		return ne.Err
	}
	return err
}

// kindName names the type a variable is parsed as, in error messages.
func kindName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.Slice:
		return "comma-separated list"
	case reflect.PointerTo(t).Implements(textUnmarshalerType):
		return t.String()
	}
	return t.Kind().String()
}
