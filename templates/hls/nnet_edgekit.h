// edgekit's integer layers for hls4ml (io_parallel): the IR's multi-threshold activation and
// requantization, computed on integer codes exactly as edgekit's integer contract defines them
// (docs/integer-contract.md), so the C-simulation equals edgekit's simulator bit for bit.
#ifndef NNET_EDGEKIT_H_
#define NNET_EDGEKIT_H_

#include "nnet_common.h"

namespace nnet {

struct ek_threshold_config {
    static const unsigned n_in = 1;
    static const unsigned n_chan = 1;  // thresholds per channel (channels last), or 1 set for all
    static const unsigned n_thr = 1;
    static const int out_min = 0;
    static const int step = 1;
    typedef ap_int<32> threshold_t;
};

// out = out_min + step * #{j : x >= T[c, j]}  (edgekit/ops/threshold.py)
template <class data_T, class res_T, typename CONFIG_T>
void ek_threshold(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in],
                  typename CONFIG_T::threshold_t thresholds[CONFIG_T::n_chan * CONFIG_T::n_thr]) {
    #pragma HLS PIPELINE
    #pragma HLS ARRAY_PARTITION variable=thresholds complete
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        const unsigned c = CONFIG_T::n_chan == 1 ? 0 : i % CONFIG_T::n_chan;
        int passed = 0;
        for (unsigned j = 0; j < CONFIG_T::n_thr; j++) {
            #pragma HLS UNROLL
            passed += data[i] >= thresholds[c * CONFIG_T::n_thr + j] ? 1 : 0;
        }
        res[i] = CONFIG_T::out_min + CONFIG_T::step * passed;
    }
}

struct ek_requant_config {
    static const unsigned n_in = 1;
    static const unsigned n_chan = 1;  // one multiplier and shift per channel, or 1 for all
    static const int zero_point_in = 0;  // a requantize node's input zero point (0 after a dense layer)
    static const int zero_point = 0;
    static const int lo = 0;
    static const int hi = 0;
    typedef ap_int<33> multiplier_t;
    typedef ap_uint<7> shift_t;
};

// y = clamp(rshift_rne((x - zero_point_in) * M[c], S[c]) + zero_point, lo, hi)  (contract.apply_requant, half_even):
// floor(p / 2^s) plus one when the remainder is above half, or exactly half and the floor is odd.
template <class data_T, class res_T, typename CONFIG_T>
void ek_requant(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in],
                typename CONFIG_T::multiplier_t multiplier[CONFIG_T::n_chan],
                typename CONFIG_T::shift_t shift[CONFIG_T::n_chan]) {
    #pragma HLS PIPELINE
    #pragma HLS ARRAY_PARTITION variable=multiplier complete
    #pragma HLS ARRAY_PARTITION variable=shift complete
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        const unsigned c = CONFIG_T::n_chan == 1 ? 0 : i % CONFIG_T::n_chan;
        ap_int<64> acc = data[i];
        acc -= CONFIG_T::zero_point_in;
        const ap_int<64> p = acc * multiplier[c];
        const unsigned s = shift[c];
        ap_int<64> y = p;
        if (s > 0) {
            const ap_int<64> below_half = (ap_int<64>(1) << (s - 1)) - 1;
            y = (p + below_half + ((p >> s) & 1)) >> s;
        }
        y += CONFIG_T::zero_point;
        if (y < CONFIG_T::lo) y = CONFIG_T::lo;
        if (y > CONFIG_T::hi) y = CONFIG_T::hi;
        res[i] = y.to_int();
    }
}

} // namespace nnet

#endif
