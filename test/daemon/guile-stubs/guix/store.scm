;; Test stand-in for (guix store): the few procedures the store-info script calls, over a fixed table.
(define-module (guix store)
  #:use-module (rnrs bytevectors)
  #:export (with-store valid-path? query-path-info
            path-info-hash path-info-nar-size path-info-references path-info-deriver))

(define-syntax-rule (with-store s body ...)
  (let ((s 'stub-store)) body ...))

;; path → (hash nar-size deriver references)
(define db
  `(("/gnu/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-top" ,(make-bytevector 32 171) 1234
     "/gnu/store/dddddddddddddddddddddddddddddddd-top.drv"
     ("/gnu/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-top" "/gnu/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-dep"))
    ("/gnu/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-dep" ,(make-bytevector 32 1) 8 #f ())))

(define (valid-path? store path) (and (assoc path db) #t))
(define (query-path-info store path) (cdr (assoc path db)))
(define (path-info-hash i) (list-ref i 0))
(define (path-info-nar-size i) (list-ref i 1))
(define (path-info-deriver i) (list-ref i 2))
(define (path-info-references i) (list-ref i 3))
