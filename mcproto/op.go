package mcproto

// Op is a memcached text-protocol command.
type Op uint8

// The commands of memcached's protocol.txt that the parser understands.
const (
	OpUnknown Op = iota
	OpGet
	OpGets
	OpGat
	OpGats
	OpSet
	OpCas
	OpAdd
	OpReplace
	OpAppend
	OpPrepend
	OpIncr
	OpDecr
	OpDelete
	OpTouch
	OpStats
	OpVersion
	OpVerbosity
	OpQuit
	OpFlushAll
	OpMetaGet    // mg
	OpMetaSet    // ms
	OpMetaDelete // md
	OpMetaNoop   // mn
	// OpNoop is the binary protocol's NOOP, which has no text command:
	// the parser never returns it; it names binary requests in metrics.
	OpNoop
	numOps
)

// opNames are the command words; String returns them so they can serve as metric label values.
var opNames = [numOps]string{
	OpUnknown:   "unknown",
	OpGet:       "get",
	OpGets:      "gets",
	OpGat:       "gat",
	OpGats:      "gats",
	OpSet:       "set",
	OpCas:       "cas",
	OpAdd:       "add",
	OpReplace:   "replace",
	OpAppend:    "append",
	OpPrepend:   "prepend",
	OpIncr:      "incr",
	OpDecr:      "decr",
	OpDelete:    "delete",
	OpTouch:     "touch",
	OpStats:     "stats",
	OpVersion:   "version",
	OpVerbosity: "verbosity",
	OpQuit:      "quit",
	OpFlushAll:  "flush_all",

	OpMetaGet:    "mg",
	OpMetaSet:    "ms",
	OpMetaDelete: "md",
	OpMetaNoop:   "mn",

	OpNoop: "noop",
}

// String returns the command word ("get", "flush_all", ...), or "unknown".
func (o Op) String() string {
	if o < numOps {
		return opNames[o]
	}
	return opNames[OpUnknown]
}

// IsRetrieval reports whether o reads values (get, gets, gat, gats): these lines carry many keys
// and may be longer than other command lines.
func (o Op) IsRetrieval() bool {
	return o >= OpGet && o <= OpGats
}

// IsStorage reports whether o is followed by a data block (set, cas, add, replace, append,
// prepend, ms).
func (o Op) IsStorage() bool {
	return o >= OpSet && o <= OpPrepend || o == OpMetaSet
}

// IsMeta reports whether o is a meta command (mg, ms, md, mn).
func (o Op) IsMeta() bool {
	return o >= OpMetaGet && o <= OpMetaNoop
}

// lookupOp maps a command word to its Op. Commands are case-sensitive, as in memcached. The
// string(b) conversions in a switch do not allocate.
func lookupOp(b []byte) Op {
	switch string(b) {
	case "get":
		return OpGet
	case "gets":
		return OpGets
	case "gat":
		return OpGat
	case "gats":
		return OpGats
	case "set":
		return OpSet
	case "cas":
		return OpCas
	case "add":
		return OpAdd
	case "replace":
		return OpReplace
	case "append":
		return OpAppend
	case "prepend":
		return OpPrepend
	case "incr":
		return OpIncr
	case "decr":
		return OpDecr
	case "delete":
		return OpDelete
	case "touch":
		return OpTouch
	case "stats":
		return OpStats
	case "version":
		return OpVersion
	case "verbosity":
		return OpVerbosity
	case "quit":
		return OpQuit
	case "flush_all":
		return OpFlushAll
	case "mg":
		return OpMetaGet
	case "ms":
		return OpMetaSet
	case "md":
		return OpMetaDelete
	case "mn":
		return OpMetaNoop
	}
	return OpUnknown
}
