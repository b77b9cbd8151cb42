;; Test stand-in for (guix base16).
(define-module (guix base16)
  #:use-module (rnrs bytevectors)
  #:export (bytevector->base16-string))

(define (bytevector->base16-string bv)
  (apply string-append
         (map (lambda (b) (string-pad (number->string b 16) 2 #\0)) (bytevector->u8-list bv))))
