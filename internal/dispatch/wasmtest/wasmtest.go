// Package wasmtest assembles tiny WebAssembly modules by hand for the
// dispatcher's tests and benchmarks: a minimal WASI command that prints a
// fixed CGI response, an infinite loop, a memory hog and a module with an
// import the dispatcher refuses. No WebAssembly toolchain is needed: each
// module is written in the comment as WAT and encoded here byte by byte.
package wasmtest

import "encoding/binary"

// Value types.
const (
	I32 byte = 0x7f
	I64 byte = 0x7e
)

// FuncType is a function signature.
type FuncType struct{ Params, Results []byte }

// Import is an imported function of type index Type.
type Import struct {
	Module, Name string
	Type         uint32
}

// Func is a defined function: its type index and its body's instructions
// (without the locals vector and without the final end).
type Func struct {
	Type   uint32
	Locals []byte // one i32/i64 local per entry
	Code   []byte
}

// Export is an exported function (by function index, imports first).
type Export struct {
	Name  string
	Index uint32
}

// Data is an active data segment in memory 0.
type Data struct {
	Offset uint32
	Bytes  []byte
}

// Module is a module to encode.
type Module struct {
	Types     []FuncType
	Imports   []Import
	Funcs     []Func
	MemoryMin uint32
	MemoryMax *uint32
	Exports   []Export
	Data      []Data
	// Custom sections are appended as they are, to make a module large.
	Custom map[string][]byte
}

func uleb(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func sleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func name(b []byte, s string) []byte { return append(uleb(b, uint64(len(s))), s...) }

func section(out []byte, id byte, body []byte) []byte {
	out = append(out, id)
	out = uleb(out, uint64(len(body)))
	return append(out, body...)
}

// Encode returns the module's binary encoding.
func (m *Module) Encode() []byte {
	out := []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}
	if len(m.Types) > 0 {
		b := uleb(nil, uint64(len(m.Types)))
		for _, t := range m.Types {
			b = append(b, 0x60)
			b = uleb(b, uint64(len(t.Params)))
			b = append(b, t.Params...)
			b = uleb(b, uint64(len(t.Results)))
			b = append(b, t.Results...)
		}
		out = section(out, 1, b)
	}
	if len(m.Imports) > 0 {
		b := uleb(nil, uint64(len(m.Imports)))
		for _, im := range m.Imports {
			b = name(b, im.Module)
			b = name(b, im.Name)
			b = append(b, 0x00)
			b = uleb(b, uint64(im.Type))
		}
		out = section(out, 2, b)
	}
	if len(m.Funcs) > 0 {
		b := uleb(nil, uint64(len(m.Funcs)))
		for _, f := range m.Funcs {
			b = uleb(b, uint64(f.Type))
		}
		out = section(out, 3, b)
	}
	{
		b := uleb(nil, 1)
		if m.MemoryMax != nil {
			b = append(b, 0x01)
			b = uleb(b, uint64(m.MemoryMin))
			b = uleb(b, uint64(*m.MemoryMax))
		} else {
			b = append(b, 0x00)
			b = uleb(b, uint64(m.MemoryMin))
		}
		out = section(out, 5, b)
	}
	{
		b := uleb(nil, uint64(len(m.Exports)+1))
		b = name(b, "memory")
		b = append(b, 0x02, 0x00)
		for _, e := range m.Exports {
			b = name(b, e.Name)
			b = append(b, 0x00)
			b = uleb(b, uint64(e.Index))
		}
		out = section(out, 7, b)
	}
	if len(m.Funcs) > 0 {
		b := uleb(nil, uint64(len(m.Funcs)))
		for _, f := range m.Funcs {
			var body []byte
			body = uleb(body, uint64(len(f.Locals)))
			for _, l := range f.Locals {
				body = append(body, 0x01, l)
			}
			body = append(body, f.Code...)
			body = append(body, 0x0b) // end
			b = uleb(b, uint64(len(body)))
			b = append(b, body...)
		}
		out = section(out, 10, b)
	}
	if len(m.Data) > 0 {
		b := uleb(nil, uint64(len(m.Data)))
		for _, d := range m.Data {
			b = append(b, 0x00, 0x41) // memory 0, i32.const
			b = sleb(b, int64(d.Offset))
			b = append(b, 0x0b)
			b = uleb(b, uint64(len(d.Bytes)))
			b = append(b, d.Bytes...)
		}
		out = section(out, 11, b)
	}
	for n, c := range m.Custom {
		out = section(out, 0, append(name(nil, n), c...))
	}
	return out
}

// Instructions used below.
var (
	opCall        = byte(0x10)
	opDrop        = byte(0x1a)
	opI32Const    = byte(0x41)
	opI32Eq       = byte(0x46)
	opLoop        = []byte{0x03, 0x40}
	opIf          = []byte{0x04, 0x40}
	opEnd         = byte(0x0b)
	opBr0         = []byte{0x0c, 0x00}
	opUnreachable = byte(0x00)
	opMemoryGrow  = []byte{0x40, 0x00}
)

func i32(v int32) []byte { return sleb([]byte{opI32Const}, int64(v)) }

// Respond returns a WASI command module whose _start writes out to stdout
// with one fd_write and returns:
//
//	(module
//	  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
//	  (memory (export "memory") 1)
//	  (data (i32.const 0) "\10\00\00\00<len>")  ;; one iovec: buf 16, len
//	  (data (i32.const 16) "<out>")
//	  (func (export "_start") (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
func Respond(out string) []byte {
	iov := binary.LittleEndian.AppendUint32(nil, 16)
	iov = binary.LittleEndian.AppendUint32(iov, uint32(len(out)))
	var code []byte
	code = append(code, i32(1)...)
	code = append(code, i32(0)...)
	code = append(code, i32(1)...)
	code = append(code, i32(8)...)
	code = append(code, opCall, 0x00, opDrop)
	pages := uint32(len(out)+16)/65536 + 1
	m := &Module{
		Types:     []FuncType{{Params: []byte{I32, I32, I32, I32}, Results: []byte{I32}}, {}},
		Imports:   []Import{{Module: "wasi_snapshot_preview1", Name: "fd_write", Type: 0}},
		Funcs:     []Func{{Type: 1, Code: code}},
		MemoryMin: pages,
		Exports:   []Export{{Name: "_start", Index: 1}},
		Data:      []Data{{Offset: 0, Bytes: iov}, {Offset: 16, Bytes: []byte(out)}},
	}
	return m.Encode()
}

// Minimal is the smallest useful CGI worker: it answers 200 "ok".
func Minimal() []byte { return Respond("Content-Type: text/plain\n\nok") }

// Loop never returns:
//
//	(module (memory (export "memory") 1)
//	  (func (export "_start") (loop $l (br $l))))
func Loop() []byte {
	code := append(append([]byte{}, opLoop...), opBr0...)
	code = append(code, opEnd)
	m := &Module{Types: []FuncType{{}}, Funcs: []Func{{Type: 0, Code: code}}, MemoryMin: 1,
		Exports: []Export{{Name: "_start", Index: 0}}}
	return m.Encode()
}

// MemoryHog grows its memory 16 pages (1 MiB) at a time until the runtime
// refuses, then traps:
//
//	(module (memory (export "memory") 1)
//	  (func (export "_start")
//	    (loop $l
//	      (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
//	      (br $l))))
func MemoryHog() []byte {
	var code []byte
	code = append(code, opLoop...)
	code = append(code, i32(16)...)
	code = append(code, opMemoryGrow...)
	code = append(code, i32(-1)...)
	code = append(code, opI32Eq)
	code = append(code, opIf...)
	code = append(code, opUnreachable, opEnd)
	code = append(code, opBr0...)
	code = append(code, opEnd)
	m := &Module{Types: []FuncType{{}}, Funcs: []Func{{Type: 0, Code: code}}, MemoryMin: 1,
		Exports: []Export{{Name: "_start", Index: 0}}}
	return m.Encode()
}

// BigMemory declares more initial memory than a small limit allows:
// (module (memory (export "memory") pages) (func (export "_start")))
func BigMemory(pages uint32) []byte {
	m := &Module{Types: []FuncType{{}}, Funcs: []Func{{Type: 0}}, MemoryMin: pages,
		Exports: []Export{{Name: "_start", Index: 0}}}
	return m.Encode()
}

// Importing returns a module whose _start calls an imported function
// module.name of type () -> ():
//
//	(module (import "<module>" "<name>" (func $f))
//	  (memory (export "memory") 1)
//	  (func (export "_start") (call $f)))
func Importing(module, name string) []byte {
	m := &Module{
		Types:     []FuncType{{}},
		Imports:   []Import{{Module: module, Name: name, Type: 0}},
		Funcs:     []Func{{Type: 0, Code: []byte{opCall, 0x00}}},
		MemoryMin: 1,
		Exports:   []Export{{Name: "_start", Index: 1}},
	}
	return m.Encode()
}

// Padded returns module with a custom section of n bytes appended, so
// that its size, not its code, is large.
func Padded(module []byte, n int) []byte {
	out := append([]byte{}, module...)
	return section(out, 0, append(name(nil, "padding"), make([]byte, n)...))
}

// Snoop tells whether memory a previous instance wrote is visible: it
// grows its memory by 16 pages, answers "dirty" if the byte at 32 KiB or
// at 1 MiB is not zero and "clean" otherwise, then sets both to 0xff:
//
//	(module
//	  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
//	  (memory (export "memory") 1)
//	  (data (i32.const 0) "<iovec of clean>") (data (i32.const 16) "...clean")
//	  (data (i32.const 64) "<iovec of dirty>") (data (i32.const 80) "...dirty")
//	  (func (export "_start")
//	    (drop (memory.grow (i32.const 16)))
//	    (if (i32.or (i32.load8_u (i32.const 0x8000)) (i32.load8_u (i32.const 0x100000)))
//	      (then (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 8))))
//	      (else (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
//	    (i32.store8 (i32.const 0x8000) (i32.const 255))
//	    (i32.store8 (i32.const 0x100000) (i32.const 255))))
func Snoop() []byte {
	clean, dirty := "Content-Type: text/plain\n\nclean", "Content-Type: text/plain\n\ndirty"
	iov := func(at, n int) []byte {
		b := binary.LittleEndian.AppendUint32(nil, uint32(at))
		return binary.LittleEndian.AppendUint32(b, uint32(n))
	}
	write := func(iovAt int32) []byte {
		var c []byte
		c = append(c, i32(1)...)
		c = append(c, i32(iovAt)...)
		c = append(c, i32(1)...)
		c = append(c, i32(8)...)
		return append(c, opCall, 0x00, opDrop)
	}
	var code []byte
	code = append(code, i32(16)...)
	code = append(code, opMemoryGrow...)
	code = append(code, opDrop)
	code = append(code, i32(0x8000)...)
	code = append(code, 0x2d, 0x00, 0x00) // i32.load8_u align=0 offset=0
	code = append(code, i32(0x100000)...)
	code = append(code, 0x2d, 0x00, 0x00)
	code = append(code, 0x72) // i32.or
	code = append(code, opIf...)
	code = append(code, write(64)...)
	code = append(code, 0x05) // else
	code = append(code, write(0)...)
	code = append(code, opEnd)
	for _, at := range []int32{0x8000, 0x100000} {
		code = append(code, i32(at)...)
		code = append(code, i32(255)...)
		code = append(code, 0x3a, 0x00, 0x00) // i32.store8 align=0 offset=0
	}
	m := &Module{
		Types:     []FuncType{{Params: []byte{I32, I32, I32, I32}, Results: []byte{I32}}, {}},
		Imports:   []Import{{Module: "wasi_snapshot_preview1", Name: "fd_write", Type: 0}},
		Funcs:     []Func{{Type: 1, Code: code}},
		MemoryMin: 1,
		Exports:   []Export{{Name: "_start", Index: 1}},
		Data: []Data{
			{Offset: 0, Bytes: iov(16, len(clean))}, {Offset: 16, Bytes: []byte(clean)},
			{Offset: 64, Bytes: iov(80, len(dirty))}, {Offset: 80, Bytes: []byte(dirty)},
		},
	}
	return m.Encode()
}
