/* The stable C API of librwkv: load an RWKV-7 GGUF model, tokenise, evaluate tokens into
 * per-sequence state slots, sample, and save or restore states.
 *
 * Conventions, true of every function below unless its comment says otherwise:
 * - C99, no C++ types. Handles (rwkv_model, rwkv_sampler) are opaque and owned by the
 *   caller from the call that creates them until the matching *_free.
 * - Functions return an rwkv_status. On anything but RWKV_OK they set this thread's last
 *   error message (rwkv_last_error) and leave every output untouched, unless said otherwise.
 *   No C++ exception ever crosses this interface.
 * - Token ids are int32_t in [0, n_vocab). Logits are n_vocab floats per token, unscaled.
 *   A state is rwkv_state_size() floats; its layout is per layer
 *   [att_shift n_embd][ffn_shift n_embd][wkv n_head * head_size * head_size].
 * - Thread safety: every call on one rwkv_model is serialised by a lock inside the model, so
 *   a model may be shared between threads (calls then wait for each other). An rwkv_sampler
 *   must be used by one thread at a time.
 * - Strings are NUL-terminated UTF-8; sizes are counts of elements (not bytes) unless said.
 */
#ifndef RWKV_RWKV_H_
#define RWKV_RWKV_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define RWKV_API __attribute__((visibility("default")))
#else
#define RWKV_API
#endif

/* Version of this header. A library of the same major version accepts every program built
 * against this or an earlier minor version; compare with rwkv_api_version() at run time. */
#define RWKV_API_VERSION_MAJOR 1
#define RWKV_API_VERSION_MINOR 1
#define RWKV_API_VERSION ((RWKV_API_VERSION_MAJOR << 16) | RWKV_API_VERSION_MINOR)

/* Result of every fallible call. Codes 1-7 mirror the library's rwkv::ErrorCode. */
typedef enum rwkv_status {
  RWKV_OK = 0,
  RWKV_ERR_IO = 1,               /* a file could not be opened, read, mapped or written */
  RWKV_ERR_FORMAT = 2,           /* a GGUF or state file is malformed */
  RWKV_ERR_MODEL = 3,            /* a well-formed file that is not a usable RWKV-7 model */
  RWKV_ERR_BACKEND = 4,          /* a backend could not start or failed on its device */
  RWKV_ERR_ARGUMENT = 5,         /* a bad argument (NULL handle, slot or token out of range...) */
  RWKV_ERR_STATE = 6,            /* a state file that does not belong to this model */
  RWKV_ERR_UNSUPPORTED = 7,      /* a valid request this build cannot do */
  RWKV_ERR_BUFFER_TOO_SMALL = 8, /* an output buffer is too small; the needed size is reported */
  RWKV_ERR_OUT_OF_MEMORY = 9,    /* an allocation failed */
  RWKV_ERR_INTERNAL = 10         /* anything else (a bug: please report the message) */
} rwkv_status;

/* RWKV_API_VERSION of the library actually linked. */
RWKV_API uint32_t rwkv_api_version(void);

/* Short lower-case name of a status ("ok", "io", "buffer_too_small"...); "unknown" for
 * values outside the enum. The string is static. */
RWKV_API const char* rwkv_status_name(rwkv_status status);

/* The message of the last call on this thread that failed, naming the file, argument or
 * field at fault; "" when none has failed yet. Successful calls leave it unchanged (like
 * errno). The pointer stays valid until the next failing call on the same thread. */
RWKV_API const char* rwkv_last_error(void);

/* ---------------------------------------------------------------------------------------
 * Models */

typedef struct rwkv_model rwkv_model;

/* Weight upload progress: done_bytes of total_bytes so far. Called on the loading thread. */
typedef void (*rwkv_progress_fn)(size_t done_bytes, size_t total_bytes, void* user_data);

/* Options of rwkv_model_load. Always start from rwkv_model_default_params(): struct_size
 * tells the library which fields the caller knows, so fields can be appended later. */
typedef struct rwkv_model_params {
  size_t struct_size;        /* sizeof(rwkv_model_params) of the caller's header */
  const char* backend;       /* "auto" (default), "cuda", "vulkan", "cpu" or "cpu-ref" */
  int32_t n_threads;         /* CPU backends: worker threads, 0 (default) = all */
  int32_t device;            /* GPU backends: adapter index, -1 (default) = the best */
  int32_t n_slots;           /* state slots (sequences live at once), >= 1; default 1 */
  rwkv_progress_fn progress; /* may be NULL (default) */
  void* progress_user_data;  /* passed to progress */
} rwkv_model_params;

RWKV_API rwkv_model_params rwkv_model_default_params(void);

/* Opens a GGUF model file and starts the backend. params may be NULL for the defaults.
 * On success *out_model is a new handle, its slots all zero; on failure *out_model is set
 * to NULL and the message names the file (and tensor or key) at fault. */
RWKV_API rwkv_status rwkv_model_load(const char* path, const rwkv_model_params* params, rwkv_model** out_model);

/* Frees a model and all its slots. NULL is a no-op. No call on it may be running. */
RWKV_API void rwkv_model_free(rwkv_model* model);

typedef struct rwkv_info {
  int32_t n_embd;      /* C: embedding width */
  int32_t n_layer;     /* L */
  int32_t n_vocab;     /* V: logits per token */
  int32_t head_size;   /* N: 64 for every released RWKV-7 */
  int32_t n_head;      /* C / N */
  int32_t n_ffn;       /* F: feed-forward width */
  int32_t n_slots;     /* state slots of this handle */
  size_t state_size;   /* floats of one slot's state (= rwkv_state_size) */
  const char* backend; /* backend that runs the model ("cpu", "cuda"...); owned by the model */
  const char* device;  /* the device it runs on, in words; owned by the model */
} rwkv_info;

/* Fills *out with the model's dimensions. The strings live as long as the model. */
RWKV_API rwkv_status rwkv_model_info(const rwkv_model* model, rwkv_info* out);

/* ---------------------------------------------------------------------------------------
 * Tokenizer (RWKV World vocabulary stored in the GGUF). Thread-safe without the model lock. */

/* Tokenises text (greedy longest match, no BOS). Writes the ids to ids[0..*n_ids) when
 * cap >= their count; otherwise returns RWKV_ERR_BUFFER_TOO_SMALL with *n_ids set to the
 * count needed and ids untouched; ids may be NULL with cap 0 to ask the size. */
RWKV_API rwkv_status rwkv_tokenize(const rwkv_model* model, const char* text, int32_t* ids, size_t cap, size_t* n_ids);

/* Turns ids back into bytes, written to text with a terminating NUL; *len receives the byte
 * count without the NUL. The bytes may end inside a UTF-8 character. When cap < *len + 1,
 * returns RWKV_ERR_BUFFER_TOO_SMALL with *len set to the byte count needed (NUL excluded);
 * text may be NULL with cap 0 to ask the size. */
RWKV_API rwkv_status rwkv_detokenize(const rwkv_model* model, const int32_t* ids, size_t n_ids, char* text, size_t cap,
                                     size_t* len);

/* ---------------------------------------------------------------------------------------
 * Evaluation. Every call appends tokens to the given slot's sequence (updates its state). */

/* Feeds n_tokens >= 1 tokens to slot, in chunks. When logits is not NULL it receives the
 * n_vocab logits after the last token. */
RWKV_API rwkv_status rwkv_eval(rwkv_model* model, int32_t slot, const int32_t* tokens, size_t n_tokens, float* logits);

/* Like rwkv_eval, but logits (not NULL) receives n_tokens * n_vocab floats: row i holds the
 * logits after tokens[i]. */
RWKV_API rwkv_status rwkv_eval_all(rwkv_model* model, int32_t slot, const int32_t* tokens, size_t n_tokens,
                                   float* logits);

/* One decode step for n >= 1 sequences at once: tokens[i] goes to slots[i] (slots distinct).
 * logits, when not NULL, receives n * n_vocab floats, row i for slots[i]. Cheaper than n
 * rwkv_eval calls on GPU backends. */
RWKV_API rwkv_status rwkv_decode_batch(rwkv_model* model, const int32_t* slots, const int32_t* tokens, size_t n,
                                       float* logits);

/* (1.1) *out = host memory for rows * n_vocab logits that the model's backend fills fastest:
 * page-locked on CUDA, where a batched download into it runs ~6x faster than into ordinary
 * memory (256 rows: 1.2 ms instead of 7 ms on an H100). Owned by the model: valid until a
 * later call asks for more rows, or rwkv_model_free. Pass it as the logits of
 * rwkv_decode_batch or rwkv_eval. */
RWKV_API rwkv_status rwkv_logits_buffer(rwkv_model* model, size_t rows, float** out);

/* ---------------------------------------------------------------------------------------
 * States */

/* Floats of one slot's state; 0 when model is NULL. */
RWKV_API size_t rwkv_state_size(const rwkv_model* model);

/* Copies slot's state to out (n == rwkv_state_size floats). */
RWKV_API rwkv_status rwkv_state_get(rwkv_model* model, int32_t slot, float* out, size_t n);
/* Replaces slot's state with in (n == rwkv_state_size floats). */
RWKV_API rwkv_status rwkv_state_set(rwkv_model* model, int32_t slot, const float* in, size_t n);
/* Writes slot's state to a file (versioned, checksummed, tied to this model), atomically. */
RWKV_API rwkv_status rwkv_state_save(rwkv_model* model, int32_t slot, const char* path);
/* Reads a file written by rwkv_state_save into slot. RWKV_ERR_STATE when it belongs to
 * another model or is damaged; the slot is then unchanged. */
RWKV_API rwkv_status rwkv_state_load(rwkv_model* model, int32_t slot, const char* path);
/* Copies slot from's state into slot to. */
RWKV_API rwkv_status rwkv_state_clone(rwkv_model* model, int32_t from, int32_t to);
/* Zeroes slot's state (an empty context). */
RWKV_API rwkv_status rwkv_state_reset(rwkv_model* model, int32_t slot);

/* ---------------------------------------------------------------------------------------
 * Sampling: repetition penalties on the logits, then top-k / top-p / min-p measured on the
 * temperature-1 softmax, then temperature on what is left. Independent of any model. */

typedef struct rwkv_sampler rwkv_sampler;

/* Always start from rwkv_sampler_default_params() (see rwkv_model_params.struct_size).
 * Defaults follow RWKV's G1 chat demos. */
typedef struct rwkv_sampler_params {
  size_t struct_size;      /* sizeof(rwkv_sampler_params) of the caller's header */
  float temperature;       /* <= 0: greedy (highest penalised logit). Default 1 */
  int32_t top_k;           /* keep the k most likely, 0 = off (default) */
  float top_p;             /* nucleus mass in [0, 1], 1 = off. Default 0.3 */
  float min_p;             /* drop p < min_p * p_max, in [0, 1], 0 = off (default) */
  float presence_penalty;  /* subtracted once from every token seen. Default 0.5 */
  float frequency_penalty; /* subtracted per (decayed) occurrence. Default 0.5 */
  float penalty_decay;     /* occurrence counts decay by this per token, in [0, 1]. 0.996 */
  uint64_t seed;           /* random stream seed. Default 42 */
} rwkv_sampler_params;

RWKV_API rwkv_sampler_params rwkv_sampler_default_params(void);

/* Creates a sampler (params NULL = defaults). RWKV_ERR_ARGUMENT names a field out of range. */
RWKV_API rwkv_status rwkv_sampler_new(const rwkv_sampler_params* params, rwkv_sampler** out_sampler);

/* Picks a token from logits[0..n_vocab) into *out_token; logits are not modified. Call
 * rwkv_sampler_accept with the token afterwards if it enters the context. */
RWKV_API rwkv_status rwkv_sampler_sample(rwkv_sampler* sampler, const float* logits, int32_t n_vocab,
                                         int32_t* out_token);

/* Records a token that entered the context (prompt or generated), for the penalties. */
RWKV_API rwkv_status rwkv_sampler_accept(rwkv_sampler* sampler, int32_t token);

/* Forgets the penalties and restarts the random stream from the seed. */
RWKV_API rwkv_status rwkv_sampler_reset(rwkv_sampler* sampler);

/* Frees a sampler. NULL is a no-op. */
RWKV_API void rwkv_sampler_free(rwkv_sampler* sampler);

#ifdef __cplusplus
}
#endif

#endif /* RWKV_RWKV_H_ */
